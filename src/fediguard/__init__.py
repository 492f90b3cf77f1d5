"""fediguard: keeps child sexual abuse material and other abusive images off fediverse servers."""

__version__ = "0.1.0"
