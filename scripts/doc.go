// Package scripts holds the provisioning and install scripts and the
// systemd unit; its tests check them.
package scripts
