"""Imports every domain's models so that Base.metadata is complete (Alembic, tests)."""

from pacslabel.annotations import models as annotations_models  # noqa: F401
from pacslabel.audit import models as audit_models  # noqa: F401
from pacslabel.catalog import models as catalog_models  # noqa: F401
from pacslabel.export import grant_models as export_grant_models  # noqa: F401
from pacslabel.export import models as export_models  # noqa: F401
from pacslabel.ingest import models as ingest_models  # noqa: F401
from pacslabel.projects import models as projects_models  # noqa: F401
from pacslabel.review import models as review_models  # noqa: F401
from pacslabel.tasks import models as tasks_models  # noqa: F401
from pacslabel.users import models as users_models  # noqa: F401
