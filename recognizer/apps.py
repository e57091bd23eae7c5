from django.apps import AppConfig


class RecognizerConfig(AppConfig):
    name = "recognizer"
    verbose_name = "Digit recognizer"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Pillow's own bomb guard (it refuses twice this) is a backstop behind the header checks
        # of ml.preprocess.ImageLimits, for any decode that forgets them.
        Image.MAX_IMAGE_PIXELS = settings.PREPROCESS_MAX_PIXELS
