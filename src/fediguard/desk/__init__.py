"""The moderators' review desk: accounts, the audit log, the queue of flagged decisions, the web
pages reviewers act from, and what they see of the media (blurred, greyscale thumbnails)."""
