# %postun of imds-shim (RPM; $1 = number of instances after the transaction).
# Like %systemd_postun_with_restart: reload systemd, and on upgrade restart
# the daemon only if it is running.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart imds-shim.service >/dev/null 2>&1 || :
	fi
fi
exit 0
