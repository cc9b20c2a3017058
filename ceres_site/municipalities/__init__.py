"""The municipalities one installation serves: each its own site address, sender, branding and alerts."""
