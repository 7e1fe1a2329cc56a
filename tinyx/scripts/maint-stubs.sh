#!/bin/sh
# Stand-ins for the system tools Debian maintainer scripts call, used while `tinyx image` runs
# the scripts of an application's packages in a chroot of the image being built (no dpkg
# database, no init system, no perl). Installed under several names; dispatches on $0.
#
# They do what the scripts need for the image: users and groups (adduser, addgroup, useradd,
# groupadd -> /etc/passwd and /etc/group), ownership and modes (dpkg-statoverride --add),
# name lookups (getent). Everything about services, alternatives, triggers and the dpkg
# database is answered "nothing to do".
prog=${0##*/}

# The lowest id from 100 (Debian's FIRST_SYSTEM_UID) that is unused in file $1.
free_id() {
    i=100
    while cut -d: -f3 "$1" | grep -qx "$i"; do i=$((i + 1)); done
    echo "$i"
}
has() { grep -q "^$2:" "$1"; }
gid_of() { grep "^$1:" /etc/group | cut -d: -f3; }

add_group() { # name [gid]
    has /etc/group "$1" && return 0
    echo "$1:x:${2:-$(free_id /etc/group)}:" >> /etc/group
}

add_user() { # name gid home shell gecos [uid]
    has /etc/passwd "$1" && return 0
    echo "$1:x:${6:-$(free_id /etc/passwd)}:$2:$5:$3:$4" >> /etc/passwd
}

add_member() { # user group
    sed -i "s/^\($2:[^:]*:[^:]*:\)\(.*\)$/\1\2,$1/; s/^\($2:[^:]*:[^:]*:\),/\1/" /etc/group
}

case "$prog" in
adduser | addgroup | useradd | groupadd)
    system=; group=; home=; shell=/usr/sbin/nologin; ingroup=; uid=; gid=; gecos=
    nohome=; names=
    while [ $# -gt 0 ]; do
        case "$1" in
        --system | -r) system=1 ;;
        --group | -U) group=1 ;;
        --home | --home-dir | -d) home=$2; shift ;;
        --shell | -s) shell=$2; shift ;;
        --ingroup | -g) ingroup=$2; shift ;;
        --uid | -u) uid=$2; shift ;;
        --gid) gid=$2; shift ;;
        --gecos | --comment | -c) gecos=$2; shift ;;
        --no-create-home | -M) nohome=1 ;;
        -*) ;;
        *) names="$names $1" ;;
        esac
        shift
    done
    set -- $names
    [ $# -ge 1 ] || exit 1
    if [ "$prog" = addgroup ] || [ "$prog" = groupadd ]; then
        add_group "$1" "$gid"
        exit 0
    fi
    if [ $# -ge 2 ]; then
        add_member "$1" "$2"
        exit 0
    fi
    if [ -n "$group" ]; then
        add_group "$1" "$gid"
        g=$(gid_of "$1")
    elif [ -n "$ingroup" ]; then
        g=$(gid_of "$ingroup")
    elif [ "$prog" = useradd ] && [ -z "$system" ]; then
        add_group "$1" "$gid"
        g=$(gid_of "$1")
    else
        g=$(gid_of nogroup)
    fi
    add_user "$1" "${g:-65534}" "${home:-/nonexistent}" "$shell" "$gecos" "$uid"
    if [ -n "$home" ] && [ "$home" != /nonexistent ] && [ -z "$nohome" ]; then
        mkdir -p "$home" && chown "$1:${g:-65534}" "$home"
    fi
    ;;
getent)
    db=$1
    shift
    case "$db" in passwd | group) ;; *) exit 2 ;; esac
    [ $# -eq 0 ] && exec cat "/etc/$db"
    for k in "$@"; do
        grep -E "^$k:|^[^:]*:[^:]*:$k:" "/etc/$db" || exit 2
    done
    ;;
dpkg-statoverride)
    # No overrides exist; --add --update applies the owner and mode it records.
    update=
    while [ $# -gt 0 ]; do
        case "$1" in
        --list) exit 1 ;;
        --update) update=1 ;;
        --add) ;;
        --*) ;;
        *) break ;;
        esac
        shift
    done
    if [ -n "$update" ] && [ $# -eq 4 ] && [ -e "$4" ]; then
        chown "$1:$2" "$4" && chmod "$3" "$4"
    fi
    ;;
deb-systemd-helper)
    # "was-enabled" false: the scripts then only update state, which is a no-op here.
    for a in "$@"; do [ "$a" = was-enabled ] && exit 1; done
    ;;
dpkg)
    # dpkg --compare-versions and queries: "no" (a fresh install has no old version).
    exit 1
    ;;
*)
    # deb-systemd-invoke, invoke-rc.d, update-rc.d, systemctl, dpkg-maintscript-helper,
    # dpkg-trigger, update-alternatives, ldconfig, ucf, ucfr, db_* helpers: nothing to do.
    ;;
esac
exit 0
