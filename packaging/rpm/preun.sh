# %preun of imds-shim (RPM; $1 = number of instances after the transaction).
# Like %systemd_preun: on erase (not upgrade) disable and stop the daemon,
# then remove its address and rules.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now imds-shim.service >/dev/null 2>&1 || :
	/usr/bin/imds-shim cleanup || :
fi
exit 0
