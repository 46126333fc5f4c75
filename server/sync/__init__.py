"""Zoho Inventory sync: the API client (`zoho`), its token broker and call budget, and the sync engine."""
