from django.urls import path

from generation import quote, views

app_name = "generation"
urlpatterns = [
    path("create/", views.create, name="create"),
    path("create/quote/", quote.quote, name="quote"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<uuid:job_id>/panel/", views.job_panel, name="job_panel"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("gallery/", views.gallery, name="gallery"),
    path("images/<uuid:image_id>/favourite/", views.image_favourite, name="image_favourite"),
    path("images/<uuid:image_id>/delete/", views.image_delete, name="image_delete"),
    path("images/<uuid:image_id>/", views.image_detail, name="image_detail"),
    path("images/<uuid:image_id>/original.png", views.image_file, name="image_file"),
    path("images/<uuid:image_id>/thumbnail.webp", views.image_thumbnail, name="image_thumbnail"),
]

# Collections, bulk actions on a selection, moving an image into a team gallery (docs/galleries.md).
from generation import bulk_views, collection_views  # noqa: E402

urlpatterns += [
    path("gallery/bulk/", bulk_views.bulk_action, name="bulk_action"),
    path("collections/", collection_views.collection_list, name="collection_list"),
    path("collections/<uuid:collection_id>/", collection_views.collection_detail, name="collection_detail"),
    path("collections/<uuid:collection_id>/rename/", collection_views.collection_rename_view,
         name="collection_rename"),
    path("collections/<uuid:collection_id>/delete/", collection_views.collection_delete_view,
         name="collection_delete"),
    path("collections/<uuid:collection_id>/remove/", collection_views.collection_remove_images_view,
         name="collection_remove_images"),
    path("images/<uuid:image_id>/collections/", collection_views.image_collections, name="image_collections"),
    path("images/<uuid:image_id>/team/", bulk_views.image_team, name="image_team"),
]

# Teams: the list, one team's members and invitations, its gallery, the invitation link (docs/teams.md).
from generation import team_views  # noqa: E402

urlpatterns += [
    path("teams/", team_views.team_list, name="team_list"),
    path("teams/<uuid:team_id>/", team_views.team_detail, name="team_detail"),
    path("teams/<uuid:team_id>/settings/", team_views.team_settings, name="team_settings"),
    path("teams/<uuid:team_id>/gallery/", team_views.team_gallery, name="team_gallery"),
    path("teams/<uuid:team_id>/invitations/", team_views.team_invite, name="team_invite"),
    path("teams/<uuid:team_id>/invitations/<uuid:invitation_id>/revoke/", team_views.invitation_revoke,
         name="team_invitation_revoke"),
    path("teams/<uuid:team_id>/invitations/<uuid:invitation_id>/resend/", team_views.invitation_resend,
         name="team_invitation_resend"),
    path("teams/<uuid:team_id>/members/<int:user_id>/role/", team_views.member_role, name="team_member_role"),
    path("teams/<uuid:team_id>/members/<int:user_id>/remove/", team_views.member_remove,
         name="team_member_remove"),
    path("teams/<uuid:team_id>/members/<int:user_id>/owner/", team_views.team_transfer, name="team_transfer"),
    path("teams/<uuid:team_id>/leave/", team_views.team_leave, name="team_leave"),
    path("invitations/<str:token>/", team_views.invitation, name="invitation"),
]

# Public links (no login under s/), reports, and the staff review queue (docs/sharing.md).
from generation import model_views, moderation_views, share_views  # noqa: E402

urlpatterns += [
    path("images/<uuid:image_id>/share/", share_views.image_share_create, name="image_share_create"),
    path("collections/<uuid:collection_id>/share/", share_views.collection_share_create,
         name="collection_share_create"),
    path("links/<uuid:link_id>/revoke/", share_views.share_link_revoke, name="share_link_revoke"),
    path("s/<str:token>/", share_views.share_page, name="share"),
    path("s/<str:token>/images/<uuid:image_id>/original.png", share_views.share_image_file, name="share_image_file"),
    path("s/<str:token>/images/<uuid:image_id>/thumbnail.webp", share_views.share_image_thumbnail,
         name="share_image_thumbnail"),
    path("s/<str:token>/report/", share_views.share_report, name="share_report"),
    path("s/<str:token>/report/thanks/", share_views.share_report_done, name="share_report_done"),
    path("staff/models/", model_views.model_list, name="staff_models"),
    path("staff/models/new/", model_views.model_register, name="staff_model_register"),
    path("staff/models/<int:model_id>/", model_views.model_edit, name="staff_model_edit"),
    path("staff/models/<int:model_id>/repair/", model_views.model_repair, name="staff_model_repair"),
    path("staff/reports/", moderation_views.report_queue, name="staff_reports"),
    path("staff/reports/history/", moderation_views.moderation_history, name="staff_moderation_history"),
    path("staff/reports/<int:report_id>/", moderation_views.report_detail, name="staff_report"),
    path("staff/reports/<int:report_id>/images/<uuid:image_id>/original.png", moderation_views.report_image_file,
         name="staff_report_image_file"),
    path("staff/reports/<int:report_id>/images/<uuid:image_id>/thumbnail.webp",
         moderation_views.report_image_thumbnail, name="staff_report_image_thumbnail"),
]

# The canvas: image to image, inpainting, outpainting (docs/canvas.md).
from generation import canvas_views  # noqa: E402

urlpatterns += [
    path("canvas/", canvas_views.canvas, name="canvas"),
    path("jobs/<uuid:job_id>/source.png", canvas_views.job_source, name="job_source"),
    path("jobs/<uuid:job_id>/mask.png", canvas_views.job_mask, name="job_mask"),
]

# PNG info on Create: a PNG's generation parameters fill the form (docs/canvas.md).
from generation import png_info_views  # noqa: E402

urlpatterns += [
    path("create/png-info/", png_info_views.png_info, name="png_info"),
]

# Fine-tuning: trainings, a new one in two steps, its live page; the LoRA library (docs/fine-tuning.md).
from generation import lora_views, training_views  # noqa: E402

urlpatterns += [
    path("trainings/", training_views.trainings, name="trainings"),
    path("trainings/new/", training_views.training_new, name="training_new"),
    path("trainings/new/settings/", training_views.training_settings, name="training_settings"),
    path("trainings/new/pictures/<int:index>.png", training_views.training_draft_image,
         name="training_draft_image"),
    path("trainings/new/quote/", training_views.training_quote, name="training_quote"),
    path("trainings/<uuid:job_id>/", training_views.training_detail, name="training_detail"),
    path("trainings/<uuid:job_id>/panel/", training_views.training_panel, name="training_panel"),
    path("trainings/<uuid:job_id>/cancel/", training_views.training_cancel, name="training_cancel"),
    path("trainings/<uuid:job_id>/samples/<int:step>/<int:index>.png", training_views.training_sample,
         name="training_sample"),
    path("trainings/<uuid:job_id>/pictures/<int:index>.png", training_views.training_image, name="training_image"),
    path("loras/", lora_views.loras, name="loras"),
    path("loras/import/", lora_views.lora_import, name="lora_import"),
    path("loras/<uuid:lora_id>/", lora_views.lora_detail, name="lora_detail"),
    path("loras/<uuid:lora_id>/download/", lora_views.lora_download, name="lora_download"),
    path("loras/<uuid:lora_id>/rename/", lora_views.lora_rename, name="lora_rename"),
    path("loras/<uuid:lora_id>/share/", lora_views.lora_share, name="lora_share"),
    path("loras/<uuid:lora_id>/unshare/", lora_views.lora_unshare, name="lora_unshare"),
    path("loras/<uuid:lora_id>/delete/", lora_views.lora_delete, name="lora_delete"),
]
