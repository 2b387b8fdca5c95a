"""Register a model from a host that has its file (a worker host, when the web hosts do not)."""

from django.core.management.base import BaseCommand, CommandError

from generation import services


class Command(BaseCommand):
    help = "Register a checkpoint (a diffusers folder or a .safetensors file) under a name (docs/models.md)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="its API name (a slug), also the PNG's Model")
        parser.add_argument("path", help="where it is on the worker hosts (the same path here)")
        parser.add_argument("--title", default="")
        parser.add_argument("--description", default="")
        parser.add_argument("--price-multiplier", default=None)
        parser.add_argument("--default", action="store_true", help="make it the model Create starts with")

    def handle(self, *args, name, path, title, description, price_multiplier, default, **options):
        try:
            model = services.model_register(name=name, title=title or name, path=path, description=description,
                                            is_default=default, price_multiplier=price_multiplier)
        except (services.ModelNotUsable, ValueError) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"Registered {model.name}: {model.family}, hash {model.hash}, at {model.path}")
