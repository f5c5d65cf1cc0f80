//! The sessions and process groups of a tree, and the one order of `setsid` and `setpgid`
//! calls that rebuilds them: the rule the dump refuses by ([`plan`] fails, naming the member)
//! and the restore follows ([`Plan`]'s steps), so the two cannot disagree.
//!
//! A process only ever inherits its session and group from its parent when it is created,
//! makes a session of its own (`setsid`, not as a group's leader, nor while a group with its
//! id exists), makes a group of its own (`setpgid(0, 0)`, not as a session's leader), or joins
//! a group that exists in its session. So:
//! - a session leader that has children in the session it was created in (it made its own
//!   after forking them) creates those first, then calls `setsid`, then creates the others;
//! - a process whose id is a group's (it leads the group, or led it and moved on while others
//!   stayed in it) makes that group right after it is created;
//! - once every process exists, each joins its group: first those that do not lead a group
//!   they have left, then those (so a group they made still has members when they leave it).
//!
//! The root is created in the restore's caller's session and group: a root that leads neither
//! stays in them, as do the members that share them with it (the caller's ids, not the dumped
//! ones: taken as they are). A session or group whose leader is not in the tree (it ended, or
//! is another process) cannot be made: refused. Every plan is checked by running it on a model
//! of the kernel's rules, ending where the dump found the tree, before it is used.

/// A process of the tree as its layout needs it: its dumped ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
}

/// One step of creating the tree, by index into the members (root: 0, made by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Member `i` is created by its parent, which exists.
    Create(usize),
    /// Member `i` makes its own session (`setsid`).
    Session(usize),
    /// Member `i` makes its own process group (`setpgid(0, 0)`).
    Group(usize),
}

/// A group to join once every member exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The group with this id, led (or made) by the member with this pid.
    Led(i32),
    /// The group the root was created in: the restore's caller's.
    Callers,
}

/// How the restore makes the layout: `steps` while creating the tree, then `joins`
/// (`setpgid(0, group)` by the member itself).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub joins: Vec<(usize, Group)>,
}

/// Why a layout cannot be rebuilt, with the member it concerns (its dumped ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRefusal {
    pub pid: i32,
    pub sid: i32,
    pub pgid: i32,
    pub why: String,
}

/// The caller's session and group, in the model.
const CALLERS_SESSION: i64 = -1;
const CALLERS_GROUP: i64 = -2;

/// The plan that rebuilds `members` (root first, parents before children), or why none can.
pub fn plan(members: &[Member]) -> Result<Plan, LayoutRefusal> {
    let Some(root) = members.first() else {
        return Ok(Plan::default());
    };
    let refuse = |m: &Member, why: String| LayoutRefusal {
        pid: m.pid,
        sid: m.sid,
        pgid: m.pgid,
        why,
    };
    let index = |pid: i32| members.iter().position(|m| m.pid == pid);
    // The ids each member must end with, the caller's standing for the root's where the root
    // does not lead them.
    let want: Vec<(i64, i64)> = members
        .iter()
        .map(|m| {
            let sid = if m.sid == root.sid && root.sid != root.pid {
                CALLERS_SESSION
            } else {
                i64::from(m.sid)
            };
            let pgid = if m.pgid == root.pgid && root.pgid != root.pid {
                CALLERS_GROUP
            } else {
                i64::from(m.pgid)
            };
            (sid, pgid)
        })
        .collect();
    let leads_session = |i: usize| want[i].0 == i64::from(members[i].pid);
    for (i, m) in members.iter().enumerate().skip(1) {
        let (sid, pgid) = want[i];
        if sid != CALLERS_SESSION && !leads_session(i) {
            match index(m.sid) {
                Some(s) if leads_session(s) => {}
                Some(_) => {
                    return Err(refuse(
                        m,
                        format!(
                            "process {} of the tree does not lead session {}",
                            m.sid, m.sid
                        ),
                    ))
                }
                None => {
                    return Err(refuse(
                        m,
                        format!(
                            "the leader of session {} is not part of the dump (it ended, or \
                             is outside the tree), and a session cannot be made without it",
                            m.sid
                        ),
                    ))
                }
            }
        }
        if pgid != CALLERS_GROUP && pgid != i64::from(m.pid) {
            match index(m.pgid) {
                Some(l) if want[l].0 == sid => {}
                Some(l) => {
                    return Err(refuse(
                        m,
                        format!(
                            "its group's leader {} is in session {}, another one",
                            m.pgid, members[l].sid
                        ),
                    ))
                }
                None => {
                    return Err(refuse(
                        m,
                        format!(
                            "the leader of group {} is not part of the dump (it ended, or is \
                             outside the tree), and a group cannot be made without it",
                            m.pgid
                        ),
                    ))
                }
            }
        }
    }
    let children: Vec<Vec<usize>> = members
        .iter()
        .map(|p| {
            (1..members.len())
                .filter(|&c| members[c].ppid == p.pid)
                .collect()
        })
        .collect();
    // The session each member must be created in (`None`: any), children before parents.
    let mut need: Vec<Option<i64>> = vec![None; members.len()];
    let mut born_in: Vec<Option<i64>> = vec![None; members.len()];
    for i in (0..members.len()).rev() {
        if !leads_session(i) {
            need[i] = Some(want[i].0);
            continue;
        }
        let own = i64::from(members[i].pid);
        for &c in &children[i] {
            match (need[c], born_in[i]) {
                (Some(s), None) if s != own => born_in[i] = Some(s),
                (Some(s), Some(b)) if s != own && s != b => {
                    return Err(refuse(
                        &members[c],
                        format!(
                            "its parent {} leads its own session and has children in two \
                             others ({b} and {s})",
                            members[i].pid
                        ),
                    ))
                }
                _ => {}
            }
        }
        need[i] = born_in[i];
    }
    // Whose id is a group's other than their own one.
    let left_group = |i: usize| {
        let id = i64::from(members[i].pid);
        !leads_session(i) && want[i].1 != id && want.iter().any(|w| w.1 == id)
    };
    let mut plan = Plan::default();
    build(
        0,
        members,
        &children,
        &need,
        &born_in,
        &want,
        &mut plan.steps,
    );
    let order: Vec<usize> = std::iter::once(0)
        .chain(plan.steps.iter().filter_map(|s| match s {
            Step::Create(i) => Some(*i),
            _ => None,
        }))
        .collect();
    for pass in [false, true] {
        for &i in &order {
            if left_group(i) == pass {
                let group = match want[i].1 {
                    CALLERS_GROUP => Group::Callers,
                    g => Group::Led(i32::try_from(g).unwrap_or(-1)),
                };
                plan.joins.push((i, group));
            }
        }
    }
    check(members, &want, &mut plan).map_err(|(i, why)| refuse(&members[i], why))?;
    Ok(plan)
}

/// The steps that create member `i`'s descendants and make its session or group.
fn build(
    i: usize,
    members: &[Member],
    children: &[Vec<usize>],
    need: &[Option<i64>],
    born_in: &[Option<i64>],
    want: &[(i64, i64)],
    steps: &mut Vec<Step>,
) {
    let id = i64::from(members[i].pid);
    let create = |c: usize, steps: &mut Vec<Step>| {
        steps.push(Step::Create(c));
        build(c, members, children, need, born_in, want, steps);
    };
    if want[i].0 == id {
        let early = |c: &usize| born_in[i].is_some() && need[*c] == born_in[i];
        for &c in children[i].iter().filter(|c| early(c)) {
            create(c, steps);
        }
        steps.push(Step::Session(i));
        for &c in children[i].iter().filter(|c| !early(c)) {
            create(c, steps);
        }
    } else {
        if want.iter().any(|w| w.1 == id) {
            steps.push(Step::Group(i));
        }
        for &c in &children[i] {
            create(c, steps);
        }
    }
}

/// Runs `plan` on a model of the kernel's rules; drops the joins that change nothing. The
/// error is the member whose step would fail, or which would end elsewhere than dumped.
fn check(members: &[Member], want: &[(i64, i64)], plan: &mut Plan) -> Result<(), (usize, String)> {
    let mut at: Vec<Option<(i64, i64)>> = vec![None; members.len()];
    at[0] = Some((CALLERS_SESSION, CALLERS_GROUP));
    let group_exists = |at: &[Option<(i64, i64)>], g: i64, sid: i64| {
        (g == CALLERS_GROUP && sid == CALLERS_SESSION)
            || at.iter().flatten().any(|&(s, p)| p == g && s == sid)
    };
    for step in &plan.steps {
        match *step {
            Step::Create(c) => {
                let parent = members.iter().position(|m| m.pid == members[c].ppid);
                at[c] = parent.and_then(|p| at[p]);
                if at[c].is_none() {
                    return Err((
                        c,
                        format!("its parent {} would not exist yet", members[c].ppid),
                    ));
                }
            }
            Step::Session(i) => {
                let id = i64::from(members[i].pid);
                if at.iter().flatten().any(|&(_, p)| p == id) {
                    return Err((
                        i,
                        format!("a group {id} would exist when it makes its session"),
                    ));
                }
                at[i] = Some((id, id));
            }
            Step::Group(i) => {
                let id = i64::from(members[i].pid);
                match at[i] {
                    Some((s, _)) if s != id => at[i] = Some((s, id)),
                    _ => return Err((i, "a session's leader cannot make a group".to_string())),
                }
            }
        }
    }
    let mut joins = Vec::new();
    for &(i, group) in &plan.joins {
        let Some((sid, pgid)) = at[i] else {
            return Err((i, "it would not exist".to_string()));
        };
        let g = match group {
            Group::Callers => CALLERS_GROUP,
            Group::Led(g) => i64::from(g),
        };
        if pgid == g {
            continue;
        }
        if sid == i64::from(members[i].pid) || !group_exists(&at, g, sid) {
            return Err((
                i,
                format!(
                    "group {} would no longer exist in its session when it joins it",
                    members[i].pgid
                ),
            ));
        }
        at[i] = Some((sid, g));
        joins.push((i, group));
    }
    plan.joins = joins;
    for (i, w) in want.iter().enumerate() {
        if at[i] != Some(*w) {
            return Err((
                i,
                "no order of setsid and setpgid calls found rebuilds it".to_string(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Member {
        Member {
            pid,
            ppid,
            pgid,
            sid,
        }
    }

    #[test]
    fn layouts_the_restore_can_make() {
        // The tree workload: root leads its session, B its group, B1 in B's.
        let p = plan(&[
            m(10, 1, 10, 10),
            m(11, 10, 10, 10),
            m(12, 10, 12, 10),
            m(13, 11, 10, 10),
            m(14, 12, 12, 10),
        ])
        .unwrap();
        assert_eq!(
            p.steps,
            [
                Step::Session(0),
                Step::Create(1),
                Step::Create(3),
                Step::Create(2),
                Step::Group(2),
                Step::Create(4)
            ]
        );
        assert!(p.joins.is_empty(), "{p:?}");
        // A child that made its own session, with its own child in it.
        plan(&[m(10, 1, 10, 10), m(11, 10, 11, 11), m(12, 11, 11, 11)]).unwrap();
        // A root that is in its caller's session and group, like its child.
        plan(&[m(10, 1, 5, 5), m(11, 10, 5, 5)]).unwrap();
        // A child that joined a sibling's group made before it.
        let p = plan(&[m(10, 1, 10, 10), m(11, 10, 11, 10), m(12, 10, 11, 10)]).unwrap();
        assert_eq!(p.joins, [(2, Group::Led(11))]);
        // A grandchild left in the root's session by a parent that then made its own: the
        // parent makes its session after creating it.
        let p = plan(&[m(10, 1, 10, 10), m(11, 10, 11, 11), m(12, 11, 10, 10)]).unwrap();
        assert_eq!(
            p.steps,
            [
                Step::Session(0),
                Step::Create(1),
                Step::Create(2),
                Step::Session(1)
            ]
        );
        // A group whose leader moved back to the root's: it makes the group, its child
        // inherits it, then it leaves.
        let p = plan(&[m(10, 1, 10, 10), m(11, 10, 10, 10), m(12, 11, 11, 10)]).unwrap();
        assert_eq!(p.joins, [(1, Group::Led(10))]);
        // A root in its caller's session and group, its child in a group of its own, and the
        // grandchild back in the caller's.
        let p = plan(&[m(10, 1, 7, 5), m(11, 10, 11, 5), m(12, 11, 7, 5)]).unwrap();
        assert_eq!(p.joins, [(2, Group::Callers)]);
    }

    #[test]
    fn layouts_it_cannot() {
        // A group whose leader is gone.
        let e = plan(&[m(10, 1, 10, 10), m(12, 10, 99, 10)]).unwrap_err();
        assert_eq!(e.pid, 12);
        assert!(e.why.contains("group 99"), "{e:?}");
        // A session whose leader is gone (a member reparented to a subreaper root).
        let e = plan(&[m(10, 1, 10, 10), m(12, 10, 12, 99)]).unwrap_err();
        assert!(e.why.contains("session 99"), "{e:?}");
        // A session made outside the tree for a child of a root that leads its own.
        plan(&[m(10, 1, 10, 10), m(11, 10, 11, 5)]).unwrap_err();
        // A group outside the tree that may not be the caller's at the restore.
        plan(&[m(10, 1, 10, 5), m(11, 10, 7, 5)]).unwrap_err();
    }
}
