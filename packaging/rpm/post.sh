# %post of imds-shim (RPM; $1 = number of instances after the transaction).
# Like %systemd_post: the unit is installed disabled and never started
# here, because the daemon refuses to run until
# /etc/imds-shim/imds-shim.yaml names a role.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create imds-shim.conf >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	cat <<'MSG'
imds-shim is installed but not started: it needs an IAM role first.
  1. Set role_arn (and region) in /etc/imds-shim/imds-shim.yaml
     (every key: /usr/share/doc/imds-shim/imds-shim.example.yaml).
  2. Check it:  imds-shim check
  3. Start it:  systemctl enable --now imds-shim
MSG
fi
exit 0
