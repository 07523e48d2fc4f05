"""Last: no worker's log holds a secret or a destination's URL path."""

from conftest import SECRETS, all_logs


def test_no_secret_in_any_log():
    logs = all_logs()
    assert logs
    for path, text in logs:
        for s in SECRETS:
            assert s not in text, "%s holds a secret or a URL path" % path
