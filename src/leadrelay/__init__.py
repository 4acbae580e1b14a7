"""leadrelay: CRM lead-stage events to Meta Conversion Leads, mapped, validated and delivered."""

__version__ = "0.1.0"
