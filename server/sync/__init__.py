"""Zoho Inventory -> catalog sync: categories, items, price books and images (README, "Zoho sync")."""
