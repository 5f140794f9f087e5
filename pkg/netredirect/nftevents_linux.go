package netredirect

import (
	"errors"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// nftGeneration is the nfnetlink message type the kernel sends to the
// NFNLGRP_NFTABLES group when a ruleset transaction commits (NFT_MSG_NEWGEN
// of the nf_tables subsystem): every change made through the nft backend
// (iptables-nft, ip6tables-nft, arptables-nft, nft, firewalld) ends with
// one. Listing rules commits nothing and sends none.
const nftGeneration = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWGEN

// subscribeNFT sends on ch (without blocking: ch should hold one, so that a
// burst of changes is one wake-up) each time an nf_tables ruleset
// transaction commits in this network namespace, until done is closed; then
// it closes ch. A receive error other than an overflow ends the
// subscription (ch is closed after a last send, since changes may have been
// missed) and goes to onError. The legacy backend has no such events.
//
// The subscription needs CAP_NET_ADMIN, which the daemon has; it is a plain
// netlink socket joined to one multicast group (vishvananda/netlink's nl
// package, already used for addresses), decoded only as far as the message
// type: no nftables library is needed to learn that something changed.
func subscribeNFT(ch chan<- struct{}, done <-chan struct{}, onError func(error)) error {
	s, err := nl.Subscribe(unix.NETLINK_NETFILTER, unix.NFNLGRP_NFTABLES)
	if err != nil {
		return err
	}
	go func() {
		<-done
		s.Close() // ends a Receive in progress
	}()
	wake := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(ch)
		for {
			msgs, from, err := s.Receive()
			select {
			case <-done:
				return
			default:
			}
			if errors.Is(err, unix.ENOBUFS) {
				wake() // the socket overflowed: changes were missed
				continue
			}
			if err != nil {
				wake()
				onError(err)
				return
			}
			for _, m := range msgs {
				if from.Pid == nl.PidKernel && m.Header.Type == nftGeneration {
					wake()
				}
			}
		}
	}()
	return nil
}
