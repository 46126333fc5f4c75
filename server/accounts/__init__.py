"""Shopper accounts: sign-up, sign-in with MFA (TOTP + recovery codes), rotating sessions, password reset."""
