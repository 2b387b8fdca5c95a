"""Every change to a Job goes through here, with its credits and its real-time event.

The Job table is the queue of record. A worker holds a lease on a running job (owner, expiry,
attempt); every write a worker makes is fenced by that lease, so a worker that was presumed dead
and comes back can never finish a job a second time.

    jobs.py     submit, cancel, delete (web side); what a job costs
    images.py   favourite, delete one image (its files go after commit; credits stay)
    queue.py    claim (one job, or a batch of compatible ones), heartbeat, succeed, fail, cancelled
                (worker side, fenced by the lease)
    training.py a training job: submit, price; checkpoints, losses, samples, succeed/cancelled/fail
    sweeps.py   expired leases, stranded queues, abandoned training drafts (beat)
    recovery.py leases of workers known to be dead (a worker restarted on their host)
    teams.py    team changes that cancel jobs on the team wallet and close sockets
    sharing.py  public links: make, revoke (generation.permissions decides who)
    moderation.py  reports of links and the staff actions on them, each one audit row
    wakeup.py   the "there is work" message, sent by task name (services never import tasks)
    sd_models.py  the model registry: register, change, mark broken, repair; the studio's own model

Callers use the package: `from generation import services; services.job_submit(...)`.
"""

from generation.models import JobNotDeletable
from generation.services.images import image_delete, image_set_favourite
from generation.services.jobs import (
    CanvasInput,
    LoraChoice,
    LoraNotAllowed,
    TeamNotAllowed,
    TooManyActiveJobs,
    job_cancel,
    job_cost,
    job_delete,
    job_submit,
)
from generation.services.queue import (
    Lease,
    LeaseLost,
    StoredImage,
    job_claim_batch,
    job_claim_next,
    job_fail,
    job_heartbeat,
    job_mark_cancelled,
    job_succeed,
)
from generation.services.recovery import jobs_release_leases_of
from generation.services.sweeps import jobs_sweep_expired, jobs_wake_if_stranded, training_drafts_sweep_abandoned
from generation.services.teams import (
    team_create,
    team_member_change_role,
    team_member_leave,
    team_member_remove,
)
from generation.services.wakeup import wake_workers

__all__ = [
    "CanvasInput",
    "JobNotDeletable",
    "Lease",
    "LeaseLost",
    "LoraChoice",
    "LoraNotAllowed",
    "StoredImage",
    "TeamNotAllowed",
    "TooManyActiveJobs",
    "image_delete",
    "image_set_favourite",
    "job_cancel",
    "job_claim_batch",
    "job_claim_next",
    "job_cost",
    "job_delete",
    "job_fail",
    "job_heartbeat",
    "job_mark_cancelled",
    "job_submit",
    "job_succeed",
    "jobs_release_leases_of",
    "jobs_sweep_expired",
    "jobs_wake_if_stranded",
    "training_drafts_sweep_abandoned",
    "wake_workers",
    "team_create",
    "team_member_change_role",
    "team_member_leave",
    "team_member_remove",
]

# Collections, bulk actions on a selection, images into a team gallery and back (docs/galleries.md).
from generation.services.bulk import (  # noqa: E402
    BulkError,
    images_add_to_collection,
    images_delete,
    images_move_to_team,
    images_zip,
)
from generation.services.collections import (  # noqa: E402
    CollectionError,
    collection_add_images,
    collection_create,
    collection_delete,
    collection_remove_images,
    collection_rename,
)
from generation.services.images import ImageMoveRefused, image_move_to_team, image_remove_from_team  # noqa: E402

__all__ += [
    "BulkError", "CollectionError", "ImageMoveRefused", "collection_add_images", "collection_create",
    "collection_delete", "collection_remove_images", "collection_rename", "image_move_to_team",
    "image_remove_from_team", "images_add_to_collection", "images_delete", "images_move_to_team", "images_zip",
]

# Public links, reports and what staff do about them (docs/sharing.md).
from generation.services.moderation import (  # noqa: E402
    ModerationRefused,
    report_create,
    report_delete_image,
    report_dismiss,
    report_hide_link,
    report_suspend_account,
)
from generation.services.sharing import (  # noqa: E402
    ShareLinkInvalid,
    ShareNotAllowed,
    share_link_create,
    share_link_revoke,
    share_links_revoke_all_of,
)

__all__ += [
    "ModerationRefused", "ShareLinkInvalid", "ShareNotAllowed", "report_create", "report_delete_image",
    "report_dismiss", "report_hide_link", "report_suspend_account", "share_link_create", "share_link_revoke",
    "share_links_revoke_all_of",
]

# The LoRA library: trained and imported adapters, renamed, shared with a team, deleted
# (docs/fine-tuning.md).
from generation.services.loras import (  # noqa: E402
    LoraRefused,
    lora_create_from_bytes,
    lora_delete,
    lora_import,
    lora_rename,
    lora_share_with_team,
    lora_unshare,
)

__all__ += [
    "LoraRefused", "lora_create_from_bytes", "lora_delete", "lora_import", "lora_rename", "lora_share_with_team",
    "lora_unshare",
]

# Training jobs: submit, price, and the worker's lease-fenced writes (docs/fine-tuning.md, "Training jobs").
from generation.services.training import (  # noqa: E402
    TrainingImageInput,
    TrainingRefused,
    training_checkpoint_saved,
    training_cost,
    training_fail,
    training_mark_cancelled,
    training_record_losses,
    training_resume_point,
    training_samples_saved,
    training_spec,
    training_submit,
    training_succeed,
)

training_cancel = job_cancel  # a queued training stops at once, a running one at its next step

__all__ += [
    "TrainingImageInput", "TrainingRefused", "training_cancel", "training_checkpoint_saved", "training_cost",
    "training_fail", "training_mark_cancelled", "training_record_losses", "training_resume_point",
    "training_samples_saved", "training_spec", "training_submit", "training_succeed",
]

# The model registry (docs/models.md, "Several models").
from generation.services.sd_models import (  # noqa: E402
    ModelNotUsable,
    builtin_model,
    model_make_default,
    model_mark_broken,
    model_register,
    model_repair,
    model_update,
)

__all__ += [
    "ModelNotUsable", "builtin_model", "model_make_default", "model_mark_broken", "model_register", "model_repair",
    "model_update",
]
