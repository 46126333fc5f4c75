"""Zoho Inventory sync: the API client (`zoho`), its token broker and call budget, and the sync engine that
takes categories, items, price books and images into the catalog (README, "Zoho sync")."""
