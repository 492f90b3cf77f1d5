"""Real servers started for integration tests (Ceph radosgw for S3, OpenSSH for SFTP).

Plain helpers with no pytest dependency, so any conftest can import and wrap them in fixtures.
"""
