# portwatch (agent and collector) %pre: the `portwatch` system user and group, made only if missing.
# RPM keeps them on erase, as Fedora's packaging guidelines do for system users.
getent group portwatch >/dev/null || groupadd --system portwatch
getent passwd portwatch >/dev/null || useradd --system --gid portwatch --home-dir /var/lib/portwatch \
    --no-create-home --shell /sbin/nologin --comment "portwatch agent and collector" portwatch
exit 0
