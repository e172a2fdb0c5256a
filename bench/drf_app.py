"""The comparison: the same check done the way most Python teams would, with Django REST
Framework and djangorestframework-api-key (prefix lookup + SHA-512), served by the same
gunicorn configuration as ours. Used by ``bench.verify_throughput``; not part of the product.

    DRF_DB=/tmp/drf.db gunicorn bench.drf_app:application   (the benchmark starts it itself)
"""

from __future__ import annotations

import os

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "rest_framework",
                        "rest_framework_api_key"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("DRF_DB", "drf.db"),
                               "OPTIONS": {"timeout": 30}}},
        MIDDLEWARE=[],
        REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [], "UNAUTHENTICATED_USER": None},
        USE_TZ=True,
    )
    django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.decorators import api_view, permission_classes  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework_api_key.permissions import HasAPIKey  # noqa: E402


@api_view(["GET"])
@permission_classes([HasAPIKey])
def check(request):
    return Response(status=204)


urlpatterns = [path("check", check)]
application = get_wsgi_application()


def seed(count: int) -> list[str]:
    """Create ``count`` keys in bulk; return a few of them."""
    from django.core.management import call_command
    from rest_framework_api_key.models import APIKey

    call_command("migrate", verbosity=0)
    generator = APIKey.objects.key_generator
    rows, keys = [], []
    for i in range(count):
        key, prefix, hashed = generator.generate()
        rows.append(APIKey(name=f"svc-{i}", prefix=prefix, hashed_key=hashed, id=f"{prefix}.{hashed[-20:]}"))
        if i < 100:
            keys.append(key)
    APIKey.objects.bulk_create(rows, batch_size=5000)
    return keys
