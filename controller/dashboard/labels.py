"""Words the templates translate from data (`_(task.status)`), marked here so that extraction
finds them and the catalog test insists on their translation."""

from __future__ import annotations

from controller.dashboard.i18n import N_

STATUSES = [N_("queued"), N_("dispatched"), N_("accepted"), N_("running"), N_("succeeded"), N_("failed"),
            N_("rejected"), N_("timed_out"), N_("canceled"), N_("expired")]
EVENT_KINDS = [N_("started"), N_("progress"), N_("retrying")]
PRESENCE = [N_("online"), N_("offline")]
SCOPES = [N_("read"), N_("operate"), N_("admin")]
LOGIN_STATUSES = [N_("unknown"), N_("logged_in"), N_("logged_out"), N_("expired")]
