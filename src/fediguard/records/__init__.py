"""Records of every decision, in SQLite by default or PostgreSQL. Never image bytes."""

from fediguard.records.store import DecisionRecord, NewDecision, RecordStore

__all__ = ["DecisionRecord", "NewDecision", "RecordStore"]
