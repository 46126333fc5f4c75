"""Fakes of outside services (real local servers speaking the service's formats), for tests and demos."""
