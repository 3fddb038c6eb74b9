"""Constants the serving tests share (a module name no other test folder uses)."""

API_KEY = "test-key-0123456789"
ADMIN_KEY = "admin-key-9876543210"
MONTH = "2026-09"
