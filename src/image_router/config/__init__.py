"""Settings: the only code that reads the environment.

`Settings` groups every setting by concern (`settings.storage.database_url`); each keeps
its own environment variable (DATABASE_URL). Vendor adapters declare their variables
beside their code (`VendorDeclaration`); README "Configuration" is generated from both.
Nothing here imports image_router beyond `kit`.
"""

from image_router.config.settings import Settings
from image_router.config.vendors import (
    VendorDeclaration,
    VendorSettings,
    misnamed_variables,
    set_variable_names,
)

__all__ = [
    "Settings",
    "VendorDeclaration",
    "VendorSettings",
    "misnamed_variables",
    "set_variable_names",
]
