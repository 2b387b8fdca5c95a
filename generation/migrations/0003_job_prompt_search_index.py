"""A GIN index for the gallery's prompt search, on PostgreSQL only.

The expression must equal what `SearchVector("job__prompt", config="english")` compiles to
(Django wraps the column in COALESCE), or PostgreSQL will not use the index. SQLite has no GIN
and searches with LIKE (see docs/architecture.md, Decisions), so there it does nothing.
"""

from django.db import migrations

INDEX = "job_prompt_search_idx"
CREATE = (
    f"CREATE INDEX IF NOT EXISTS {INDEX} ON generation_job "
    "USING gin (to_tsvector('english'::regconfig, COALESCE(prompt, '')))"
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):

    dependencies = [
        ("generation", "0002_image_favourite_gallery"),
    ]

    operations = [
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
