"""Every business area's tables, imported so that ``metadata`` is complete (Alembic, tests)."""

import importlib

from patron.customers import tables as customers  # noqa: F401
from patron.db import metadata  # noqa: F401
from patron.imports import tables as imports  # noqa: F401
from patron.orders import tables as orders  # noqa: F401
from patron.org import tables as org  # noqa: F401
from patron.security import tables as security  # noqa: F401
from patron.webhooks import tables as webhooks  # noqa: F401

# Areas under construction add their tables here when their modules exist.
for _name in ("patron.analytics.tables", "patron.analytics.clv_tables",
              "patron.analytics.churn_tables", "patron.analytics.crosssell_tables",
              "patron.analytics.jobs_tables",
              "patron.analytics.dashboards_tables", "patron.loyalty.tables",
              "patron.coupons.tables", "patron.storedvalue.tables", "patron.rewards.tables",
              "patron.benefits.tables", "patron.messaging.tables", "patron.selfservice.tables",
              "patron.checkout.tables", "patron.loyalty.reports_tables", "patron.tags.tables",
              "patron.segments.tables", "patron.privacy.tables", "patron.automations.tables",
              "patron.campaigns.tables", "patron.backup.tables"):
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        # the area's package or its tables module does not exist yet; anything else is a bug
        if _exc.name is None or not (_name + ".").startswith(_exc.name + "."):
            raise
