# portwatch-collector %post: state directory, then the unit (enabled or not as the system's presets say).
[ -d /var/lib/portwatch ] || install -d -o portwatch -g portwatch -m 0750 /var/lib/portwatch
# The config may hold webhook URLs and bearer tokens: readable by the service's group only.
if [ -f /etc/portwatch/collector.toml ]; then
    chgrp portwatch /etc/portwatch/collector.toml && chmod 0640 /etc/portwatch/collector.toml
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset portwatch-collector.service >/dev/null 2>&1 || :
fi
exit 0
