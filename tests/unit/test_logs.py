"""Logging keeps secrets out: the loggers that print credentials at DEBUG are capped, and traced
frames have the job's secrets and secret-looking keys redacted."""

import logging

from embedded import logs


def test_third_party_loggers_that_print_credentials_stay_at_warning_even_at_debug():
    logs.setup("DEBUG")
    for name in ("boto3", "botocore", "botocore.auth", "s3transfer"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    assert logging.getLogger("embedded").getEffectiveLevel() == logging.DEBUG


def test_urllib3_retry_warnings_which_carry_presigned_query_strings_are_not_logged():
    logs.setup("DEBUG")
    assert logging.getLogger("urllib3.connectionpool").getEffectiveLevel() == logging.ERROR
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.WARNING)


def test_redact_hides_the_jobs_secrets_anywhere_and_values_under_secret_keys():
    frame = {"type": "execution_error", "data": {
        "current_inputs": {"api_key": ["sk-live-123456"], "seed": [5]},
        "exception_message": "401 for key sk-live-123456", "outputs": [["sk-live-123456 in text"]]}}
    redacted = logs.redact(frame, ["sk-live-123456"])
    assert "sk-live-123456" not in repr(redacted)
    assert redacted["data"]["current_inputs"] == {"api_key": "<redacted>", "seed": [5]}
    assert redacted["data"]["exception_message"] == "401 for key <redacted>"
    assert frame["data"]["current_inputs"]["api_key"] == ["sk-live-123456"], "the frame itself is left alone"
