"""The member self-service pages (``/m/``): one-time-code login by phone, enrolment, points,
tier, purchases, the QR member card and consents (docs/self-service.md)."""
