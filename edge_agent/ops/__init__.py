"""Operations: metrics, systemd, disk watch, the site key file and provisioning."""
