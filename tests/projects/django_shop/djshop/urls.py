from django.urls import include, path
from shop import views

urlpatterns = [
    path("orders/", views.create_order),
    path("orders/bulk/", views.create_orders),
    path("outlast/", include("outlast.adapters.django.urls")),
]
