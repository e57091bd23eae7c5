from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("recognizer", "0004_submission_drawing_superseded"),
    ]

    operations = [
        migrations.AddField(
            model_name="submission",
            name="is_digit",
            field=models.BooleanField(
                blank=True,
                help_text="False: it does not look like a digit (rejected).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="submission",
            name="digit_score",
            field=models.FloatField(
                blank=True,
                help_text="0..1, how digit-like; below the threshold: rejected.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="submission",
            index=models.Index(fields=["is_digit"], name="submission_is_digit"),
        ),
    ]
