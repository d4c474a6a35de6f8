"""A train step on 8 simulated CPU devices equals the 1-device step (separate process,
since the device count is fixed when JAX starts)."""


def test_eight_device_step_equals_one_device_step(run_on_eight_cpu_devices):
  run_on_eight_cpu_devices("sharding_check.py", "OK 1-device vs 8-device")
