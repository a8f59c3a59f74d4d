"""Run: one scoring run's plan and steps, written once, used by the flows and the tests."""
