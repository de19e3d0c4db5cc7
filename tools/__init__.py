"""Developer tools of the cyconv repository (not shipped in the wheel)."""
