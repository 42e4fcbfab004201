from django.db import models


class Mode(models.TextChoices):
    SECRETARY = "secretary", "Secretary"
    INTIMATE = "intimate", "Intimate"
