"""Quiet by default: what Ray logs in the driver while it starts goes to the command's log file."""

import logging

from ray_jobs.quiet import quiet_logs


def test_a_warning_ray_logs_during_init_goes_to_the_log_file(tmp_path, capsys):
    log = tmp_path / "driver.log"
    with quiet_logs(log):
        # ray.init(configure_logging=False) clears the "ray" logger's handlers, then warns about token
        # authentication when it starts a local cluster; without a handler the line would reach stderr.
        logging.getLogger("ray").handlers.clear()
        logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
            "Token authentication is enabled for this Ray cluster.")
    assert "Token authentication is enabled" in log.read_text()
    assert "Token authentication" not in capsys.readouterr().err
