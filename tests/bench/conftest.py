"""The marker of the slow tests that run the benches themselves (deselect: -m 'not device_check')."""


def pytest_configure(config):
    config.addinivalue_line("markers", "device_check: runs bench/device_check.sh --smoke (minutes on a small CPU)")
