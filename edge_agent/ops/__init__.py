"""Operations: metrics, the disk watch, the site key file and provisioning."""
