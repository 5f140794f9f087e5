package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"syscall"
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
	d.reloadAttempts++
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
	creds, lns := d.creds, d.lns
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

	// 2. The listeners, before the redirect moves. A listener that stays
	// configured is never closed: between a close and a bind another
	// process could take the port, and clients would be refused. A new
	// address is bound beside the old one, which closes only after the
	// switch; a new hop limit applies to connections accepted from now on.
	// What can be bound now is: imds.listen, and each other listener's
	// address (the IPv6 endpoint, already in place) on the new port.
	// Listeners whose address the new network puts in place (IPv6 turned
	// on) are bound right after its Setup, below.
	if old.IMDS.Listen != cfg.IMDS.Listen {
		if err := d.checkPort(cfg); err != nil {
			return err
		}
	}
	_, added, err := d.bind([]netip.AddrPort{cfg.IMDS.Listen}, cfg.IMDS.HopLimit, lns)
	if err != nil {
		return err
	}
	for _, b := range lns[1:] {
		a := netip.AddrPortFrom(b.addr.Addr(), cfg.IMDS.Listen.Port())
		if _, more, err := d.bind([]netip.AddrPort{a}, cfg.IMDS.HopLimit, append(slices.Clone(lns), added...)); err == nil {
			added = append(added, more...)
		} else {
			// Step 5 binds it after all if the new network plans it,
			// or rejects the reload.
			d.log.Debug("binding a listener before the redirect moves", "addr", a, "err", err)
		}
	}
	for _, b := range added {
		d.serve(d.srv, b.ln)
	}
	if old.IMDS.HopLimit != cfg.IMDS.HopLimit {
		if err := setHopLimits(lns, cfg.IMDS.HopLimit, old.IMDS.HopLimit); err != nil {
			closeAll(added)
			return err
		}
	}
	abandonListeners := func() {
		closeAll(added)
		if old.IMDS.HopLimit != cfg.IMDS.HopLimit {
			if err := setHopLimits(lns, old.IMDS.HopLimit, cfg.IMDS.HopLimit); err != nil {
				d.log.Error("restoring the hop limit", "err", err)
			}
		}
	}

	// 3. The handler: one handler serves every listener, so switching it
	// while the redirect still points at the old listeners is safe. It
	// goes before the network because it can still refuse (an unreadable
	// metadata_dir), and nothing outside the process has changed yet.
	if err := d.handler.Update(cfg, newCreds); err != nil {
		abandonListeners()
		return fmt.Errorf("applying the metadata configuration: %w", err)
	}
	restoreHandler := func(err error) error {
		if rerr := d.handler.Update(old, creds); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring the previous metadata configuration: %w", rerr))
		}
		abandonListeners()
		return err
	}

	// 4. Network: converge to the new plan; on failure put the handler
	// back too, so the old configuration keeps running whole.
	cur := d.net
	newNet, err := d.reloadNetwork(ctx, old, cfg, !reflect.DeepEqual(oldComp.Network, newComp.Network))
	if err != nil {
		return restoreHandler(err)
	}

	// 5. The listeners whose addresses only the new network put in place
	// (the IPv6 endpoint when IPv6 was turned on). Failing here puts the
	// previous network back.
	want := wantListeners(cfg, newNet)
	all, late, err := d.bind(want, cfg.IMDS.HopLimit, append(slices.Clone(lns), added...))
	if err != nil {
		if newNet != cur {
			err = errors.Join(err, d.restoreNetwork(ctx, old, cfg, cur, newNet))
		}
		return restoreHandler(err)
	}
	for _, b := range late {
		d.serve(d.srv, b.ln)
	}

	// 6. Switch.
	d.mu.Lock()
	d.cfg, d.creds, d.lns, d.net = cfg, newCreds, all, newNet
	d.mu.Unlock()
	if gone := without(lns, want); len(gone) > 0 {
		// The redirect points at the new listeners now. A connection
		// redirected to an old one just before the switch may still
		// sit in its accept queue, which closing would reset: let the
		// server take those first. Requests already accepted on it
		// finish normally after the close.
		time.Sleep(listenerHandover)
		closeAll(gone)
		d.forgetClosedFlows(gone)
	}
	// Bound early but not planned after all (IPv6 turned off).
	closeAll(without(added, want))
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
		d.mu.Lock()
		d.metricsGen++
		m := d.metrics
		d.metrics, d.metricsErr = nil, ""
		d.mu.Unlock()
		if m != nil {
			m.Close()
		}
		if addr := cfg.MetricsListen(); addr != "" {
			m, err := d.startMetrics(ctx, addr)
			switch {
			case err == nil:
				d.mu.Lock()
				d.metrics = m
				d.mu.Unlock()
			case errors.Is(err, syscall.EADDRINUSE):
				d.metricsHeld(ctx, addr, err)
			default:
				d.log.Error("binding the metrics listener; metrics are off until the next reload", "addr", addr, "err", err)
				d.mu.Lock()
				d.metricsErr = err.Error()
				d.mu.Unlock()
			}
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

// forgetAgainAfter is when ended flows to a closed listener are looked
// for a second time: a connection that was still closing on it at the
// close ends within this time or keeps its server socket.
const forgetAgainAfter = 2 * time.Second

// forgetClosedFlows removes the connection-tracking entries of ended flows
// to the listeners a reload closed, now and once more a little later.
func (d *daemon) forgetClosedFlows(gone []boundListener) {
	if d.deps.ForgetClosedFlows == nil {
		return
	}
	forget := func() {
		for _, b := range gone {
			if n, err := d.deps.ForgetClosedFlows(b.addr); err != nil {
				d.log.Warn("forgetting ended connections to a closed listener", "addr", b.addr, "err", err)
			} else if n > 0 {
				d.log.Debug("forgot ended connections to a closed listener", "addr", b.addr, "flows", n)
			}
		}
	}
	forget()
	time.AfterFunc(forgetAgainAfter, forget)
}

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

// restoreNetwork puts the previous network cur back after next was set up
// by reloadNetwork and the reload then failed.
func (d *daemon) restoreNetwork(ctx context.Context, old, cfg *config.Config, cur, next Network) error {
	d.netRun.stop()
	d.netRun = nil
	var errs []error
	sameSite := cur != nil && next != nil && old.Network.Link == cfg.Network.Link && old.Network.Backend == cfg.Network.Backend
	if next != nil && !sameSite {
		if err := next.Teardown(context.WithoutCancel(ctx)); err != nil {
			errs = append(errs, fmt.Errorf("removing the new network redirect: %w", err))
		}
	}
	if cur != nil {
		// On the same link and backend Setup converges our chains back
		// to the previous plan in place.
		if err := cur.Setup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("restoring the previous redirect: %w", err))
		}
		d.netRun = startRunner(ctx, d.log, "network", cur.Run)
	}
	return errors.Join(errs...)
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
