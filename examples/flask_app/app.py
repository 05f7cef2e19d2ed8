"""A Flask app that hands slow work to outlast: `flask --app app run` (OUTLAST_API_URL, OUTLAST_SECRET_KEY set)."""

import os

from flask import Flask, jsonify, request
from tasks import build_report, handle_payment_event

from outlast.adapters.flask import Outlast

# `tasks` are what /outlast/health checks the runtime has (default: every task this process declares).
outlast = Outlast(tasks=[build_report], webhooks={"payments": handle_payment_event})


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["OUTLAST_API_URL"] = os.environ.get("OUTLAST_API_URL", "http://127.0.0.1:7070")
    app.config["OUTLAST_SECRET_KEY"] = os.environ["OUTLAST_SECRET_KEY"]
    app.config["OUTLAST_WEBHOOK_SECRET"] = os.environ.get("OUTLAST_WEBHOOK_SECRET")
    outlast.init_app(app)  # the blueprint at /outlast, trace ids, current_app.extensions["outlast"]

    @app.post("/reports")
    def start_report():
        handle = outlast.client.trigger(build_report, request.get_json(), tags=["reports"])
        token = outlast.client.public_token(handle.id)  # for the browser: /outlast/runs/<id>?token=...
        return jsonify(run_id=handle.id, token=token.token), 202

    return app


app = create_app()
