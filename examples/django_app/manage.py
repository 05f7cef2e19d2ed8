#!/usr/bin/env python
"""`python manage.py migrate`, `python manage.py outlast dev` (runtime + tasks), `python manage.py runserver`."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
