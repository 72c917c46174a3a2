"""The host tests (tests/host/) run only where a real ComfyUI is found; this says so when there is none,
and fails where they are required (GS_REQUIRE_HOST=1, as in CI)."""
import host_support


def test_a_comfyui_host_is_found_for_the_host_tests():
    if host_support.COMFYUI_ROOT is None:
        host_support.skip_or_fail(host_support.NO_COMFYUI_REASON)
