"""sprx-pipeline: link social prescribing referrals in pseudonymised GP extracts to the
health-service use before and after them, and publish tables analysts can trust."""

__version__ = "0.1.0"
