"""Helpers of the hardening tests (test_fuzz_board, test_bad_input, test_kill, test_safety)."""
