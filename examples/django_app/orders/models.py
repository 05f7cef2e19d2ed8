from django.db import models


class Order(models.Model):
    email = models.EmailField()
    total_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default="placed")
    receipt = models.TextField(blank=True)
