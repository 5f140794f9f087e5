package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	sdd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/imds-shim/imds-shim/pkg/config"
)

// reload re-reads the configuration. A valid one is applied without dropping
// requests: everything that can fail (a new role's first credentials, a new
// listener, the new network state) is prepared first, and only then does the
// daemon switch. An invalid one is rejected and the old one keeps running.
func (d *daemon) reload(ctx context.Context) {
	d.notify("RELOADING=1\n" + strings.TrimSpace(sdd.SdNotifyMonotonicUsec()) + "\nSTATUS=reloading " + d.path)
	err := d.applyReload(ctx)
	d.mu.Lock()
	if err != nil {
		d.lastErr = err.Error()
	} else {
		d.reloads++
		d.lastErr = ""
	}
	d.mu.Unlock()
	if err != nil {
		d.log.Error("reload rejected; the previous configuration keeps running", "config", d.path, "err", err)
	} else {
		d.log.Info("reloaded", "config", d.path, "roles", roleList(d.cfg))
	}
	d.notify("READY=1\nSTATUS=" + d.statusLine())
}

func (d *daemon) applyReload(ctx context.Context) (err error) {
	cfg, err := d.deps.Load(d.path)
	if err != nil {
		return err
	}
	d.mu.Lock()
	old := d.cfg
	creds, ln := d.creds, d.ln
	d.mu.Unlock()

	// 1. Credentials: a new role (or any credential setting) gets its first
	// set before the switch, so clients never see a gap.
	newCreds := creds
	oldComp, newComp := d.components(old), d.components(cfg)
	if !reflect.DeepEqual(oldComp.Credentials, newComp.Credentials) {
		if newCreds, err = d.deps.NewCredentials(ctx, cfg); err != nil {
			return fmt.Errorf("preparing credentials: %w", err)
		}
		defer func() {
			// A rejected reload: stop what only the new engine started
			// (per-caller sessions made while its handler was up).
			if dc, ok := newCreds.(discarder); ok && err != nil {
				dc.Discard()
			}
		}()
		fctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout.D())
		err = newCreds.Fetch(fctx)
		cancel()
		if err != nil {
			return fmt.Errorf("fetching first credentials for %s: %w", roleList(cfg), err)
		}
	}

	// 2. The listener. A listener that stays configured is never closed:
	// between a close and a bind any user could take a port above
	// ip_unprivileged_port_start, and clients would be refused. A new
	// address is bound beside the old one, which closes only after the
	// switch; a new hop limit applies to connections accepted from now on.
	newLn := ln
	abandonListener := func() {}
	switch {
	case old.IMDS.Listen != cfg.IMDS.Listen:
		if err := d.checkPort(cfg); err != nil {
			return err
		}
		if newLn, err = d.deps.Listen(cfg.IMDS.Listen.String(), cfg.IMDS.HopLimit); err != nil {
			return fmt.Errorf("binding the metadata listener %s: %w", cfg.IMDS.Listen, err)
		}
		d.serve(d.srv, newLn)
		abandonListener = func() { newLn.Close() }
	case old.IMDS.HopLimit != cfg.IMDS.HopLimit:
		hl, ok := ln.(hopLimiter)
		if !ok {
			return fmt.Errorf("imds.hop_limit: the metadata listener %s cannot change its hop limit", ln.Addr())
		}
		if err := hl.SetHopLimit(cfg.IMDS.HopLimit); err != nil {
			return fmt.Errorf("imds.hop_limit: %w", err)
		}
		abandonListener = func() {
			if err := hl.SetHopLimit(old.IMDS.HopLimit); err != nil {
				d.log.Error("restoring the hop limit", "err", err)
			}
		}
	}

	// 3. The handler: one handler serves every listener, so switching it
	// while the redirect still points at the old listener is safe. It
	// goes before the network because it can still refuse (an unreadable
	// metadata_dir), and nothing outside the process has changed yet.
	if err := d.handler.Update(cfg, newCreds); err != nil {
		abandonListener()
		return fmt.Errorf("applying the metadata configuration: %w", err)
	}

	// 4. Network: converge to the new plan; on failure put the handler
	// back too, so the old configuration keeps running whole.
	newNet, err := d.reloadNetwork(ctx, old, cfg, !reflect.DeepEqual(oldComp.Network, newComp.Network))
	if err != nil {
		if rerr := d.handler.Update(old, creds); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring the previous metadata configuration: %w", rerr))
		}
		abandonListener()
		return err
	}

	// 5. Switch.
	d.mu.Lock()
	d.cfg, d.creds, d.ln, d.net = cfg, newCreds, newLn, newNet
	d.mu.Unlock()
	if newLn != ln && old.IMDS.Listen != cfg.IMDS.Listen {
		// The redirect points at the new listener now. A connection
		// redirected to the old one just before the switch may still
		// sit in its accept queue, which closing would reset: let the
		// server take those first. Requests already accepted on it
		// finish normally after the close.
		time.Sleep(listenerHandover)
		ln.Close()
	}
	if newCreds != creds {
		d.switched(newCreds)
		// A new engine that shares refreshers with the old one takes
		// them over before the old one stops, so they never pause.
		if a, ok := newCreds.(acquirer); ok {
			a.Acquire()
		}
		old := d.credsRun
		d.credsRun = startRunner(ctx, d.log, "credentials", newCreds.Run)
		old.stop()
	}
	if old.MetricsListen() != cfg.MetricsListen() {
		if d.metrics != nil {
			d.metrics.Close()
			d.metrics = nil
		}
		if addr := cfg.MetricsListen(); addr != "" {
			m, err := d.startMetrics(ctx, addr)
			if err != nil {
				d.log.Error("binding the metrics listener; metrics are off until the next reload", "addr", addr, "err", err)
			}
			d.metrics = m
		}
	}
	return nil
}

// acquirer is an engine (credentials.Set) that can take over the
// refreshers it shares with the engine it replaces before that one stops.
type acquirer interface{ Acquire() }

// discarder is an engine that can release what it started without ever
// having run (credentials.Set), for a rejected reload.
type discarder interface{ Discard() }

// listenerHandover is how long an old listener keeps accepting after the
// redirect moved to the new one: far longer than a SYN takes on this host.
const listenerHandover = 200 * time.Millisecond

// hopLimiter is a listener whose hop limit changes in place
// (*imds.Listener).
type hopLimiter interface {
	SetHopLimit(n int) error
}

// reloadNetwork returns the network component for cfg, set up, with the old
// one's state removed where it differs.
func (d *daemon) reloadNetwork(ctx context.Context, old, cfg *config.Config, changed bool) (Network, error) {
	cur := d.net
	if !changed {
		return cur, nil
	}
	if !cfg.ManageNetwork() {
		if cur != nil {
			d.netRun.stop()
			d.netRun = nil
			if err := cur.Teardown(context.WithoutCancel(ctx)); err != nil {
				d.log.Error("removing the network redirect", "err", err)
			}
		}
		return nil, nil
	}
	next, err := d.deps.NewNetwork(cfg)
	if err != nil {
		return nil, fmt.Errorf("preparing the network redirect: %w", err)
	}
	sameSite := cur != nil && old.Network.Link == cfg.Network.Link && old.Network.Backend == cfg.Network.Backend
	if cur != nil {
		d.netRun.stop()
		d.netRun = nil
		if !sameSite {
			// Another link or backend: the old address and rules are
			// not the new plan's, so remove them first.
			if err := cur.Teardown(context.WithoutCancel(ctx)); err != nil {
				d.log.Error("removing the previous network redirect", "err", err)
			}
		}
	}
	// On the same link and backend, Setup converges the chains we own to
	// the new plan in place, so the address never disappears.
	if err := next.Setup(ctx); err != nil {
		err = fmt.Errorf("setting up the network redirect: %w", err)
		if cur != nil {
			// Restore the previous plan.
			if rerr := cur.Setup(ctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restoring the previous redirect: %w", rerr))
			}
			d.netRun = startRunner(ctx, d.log, "network", cur.Run)
		}
		return nil, err
	}
	d.netRun = startRunner(ctx, d.log, "network", next.Run)
	return next, nil
}

// components returns cfg's component configurations. Without
// Deps.Components every reload counts as a change: reflect.DeepEqual never
// finds two non-nil funcs equal.
func (d *daemon) components(cfg *config.Config) Components {
	if d.deps.Components == nil {
		changed := func() {}
		return Components{Credentials: changed, Network: changed}
	}
	return d.deps.Components(cfg)
}
