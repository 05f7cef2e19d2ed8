from django.urls import include, path
from orders import views

urlpatterns = [
    path("orders/", views.place_order),
    path("orders/<int:order_id>/", views.order_status),
    # GET /outlast/runs/<id>[/stream], POST /outlast/webhooks/<name>, GET /outlast/health
    path("outlast/", include("outlast.adapters.django.urls")),
]
