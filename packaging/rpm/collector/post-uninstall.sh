# portwatch-collector %postun: reload units; after an upgrade, restart the service if it was running.
# On erase /var/lib/portwatch stays (RPM has no purge): remove it by hand if its data is not wanted.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -ge 1 ]; then
    systemctl try-restart portwatch-collector.service >/dev/null 2>&1 || :
fi
exit 0
