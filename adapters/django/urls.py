"""`path("outlast/", include("outlast.adapters.django.urls"))`: the adapter endpoints under that prefix."""

from django.urls import re_path

from .views import endpoint

app_name = "outlast"
urlpatterns = [re_path(r"^(?P<path>.*)$", endpoint, name="endpoint")]
