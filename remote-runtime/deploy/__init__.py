"""Deployments: bundles, virtualenvs, versions, environment variables, the deployed supervisor."""
