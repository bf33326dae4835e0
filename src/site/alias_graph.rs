//! The site's aliases as chasquid expands them: loops and chains too deep for chasquid.
//!
//! Every address of the site that expands further (an alias, or a domain's catch-all `*`) is
//! a node; an edge goes to each site address its targets name that expands again. Users,
//! remote addresses and pipes end an expansion.
//!
//! Both checks are linear in the size of the graph, because a site file is untrusted input
//! and the obvious path-by-path search is exponential (nine aliases that each name the other
//! eight have over 100,000 distinct loops):
//! - **Loops**: Tarjan's strongly connected components. Each group of aliases that reach one
//!   another is reported **once**, with its shortest loop through its first alias and the
//!   names of the group's other members, so a site never gets more loop findings than it has
//!   aliases, however densely they point at each other.
//! - **Depth**: chasquid resolves an address at level 0 and each target one level deeper, and
//!   refuses any lookup at level [`ALIAS_RECURSION_LIMIT`] or beyond (`internal/aliases`:
//!   `recursionLimit`). Users and remote addresses are looked up too (a level each); a pipe is
//!   not. The deepest level of every alias outside a loop is computed once per alias, in the
//!   order Tarjan's algorithm finishes the components (everything an alias reaches is
//!   finished before it).

use std::collections::{HashMap, HashSet, VecDeque};

use super::model::Site;
use super::names::DomainName;
use super::policy::AliasTarget;
use super::validate::{Finding, finding};

/// chasquid refuses to look an address up at this level of expansion or deeper.
pub const ALIAS_RECURSION_LIMIT: usize = 10;

/// Longest chain shown in a depth finding before the middle is elided.
const SHOWN_CHAIN: usize = 12;

type Node = (DomainName, String);

/// What the site's domains deliver to, indexed for constant-time lookups.
pub struct SiteAddresses<'a> {
    users: HashMap<&'a DomainName, HashSet<&'a str>>,
    aliases: HashMap<&'a DomainName, HashSet<&'a str>>,
}

impl<'a> SiteAddresses<'a> {
    pub fn of(site: &'a Site) -> SiteAddresses<'a> {
        let mut users = HashMap::new();
        let mut aliases = HashMap::new();
        for (domain, d) in site.domains.iter() {
            users.insert(domain, d.users.iter().map(|u| u.as_str()).collect());
            aliases.insert(domain, d.aliases.keys().map(|a| a.as_str()).collect());
        }
        SiteAddresses { users, aliases }
    }

    pub fn is_domain(&self, domain: &DomainName) -> bool {
        self.users.contains_key(domain)
    }

    pub fn is_user(&self, domain: &DomainName, local: &str) -> bool {
        self.users.get(domain).is_some_and(|u| u.contains(local))
    }

    pub fn is_alias(&self, domain: &DomainName, local: &str) -> bool {
        self.aliases.get(domain).is_some_and(|a| a.contains(local))
    }

    pub fn has_catch_all(&self, domain: &DomainName) -> bool {
        self.is_alias(domain, "*")
    }

    /// Does `local@domain` name something the site delivers to (a user or an alias, or
    /// anything when the domain has a catch-all)?
    pub fn resolves(&self, domain: &DomainName, local: &str) -> bool {
        self.is_user(domain, local) || self.is_alias(domain, local) || self.has_catch_all(domain)
    }

    /// The site address an alias target names (`i` in `domain`, or `x@other-site-domain`),
    /// or None for remote mailboxes and pipes.
    pub fn site_target(&self, domain: &DomainName, target: &AliasTarget) -> Option<Node> {
        match target {
            AliasTarget::Local(l) => Some((domain.clone(), l.as_str().to_string())),
            AliasTarget::Address(a) => DomainName::try_from(a.domain())
                .ok()
                .filter(|d| self.is_domain(d))
                .map(|d| (d, a.local_part().to_string())),
            AliasTarget::Pipe(_) => None,
        }
    }
}

/// The expansion graph: nodes are the site's aliases (catch-alls included) in sorted order.
struct Graph {
    nodes: Vec<Node>,
    edges: Vec<Vec<usize>>,
    /// Deepest level a node's own targets reach without expanding further: 1 when it has a
    /// user, remote or dangling target (chasquid looks it up), 0 when its only target is a
    /// pipe or other aliases.
    terminal: Vec<usize>,
    /// The first such target, to show at the end of a chain.
    terminal_name: Vec<Option<String>>,
}

impl Graph {
    fn of(site: &Site, addresses: &SiteAddresses) -> Graph {
        let mut nodes = Vec::new();
        for (domain, d) in site.domains.iter() {
            for alias in d.aliases.keys() {
                nodes.push((domain.clone(), alias.as_str().to_string()));
            }
        }
        let index: HashMap<&Node, usize> = nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
        let mut edges = vec![Vec::new(); nodes.len()];
        let mut terminal = vec![0; nodes.len()];
        let mut terminal_name = vec![None; nodes.len()];
        let entries = site
            .domains
            .iter()
            .flat_map(|(domain, d)| d.aliases.values().map(move |t| (domain, t)));
        // Same order as `nodes`: domains, then their aliases, both sorted.
        for (i, (domain, targets)) in entries.enumerate() {
            let mut seen = HashSet::new();
            for target in &targets.0 {
                let next = match addresses.site_target(domain, target) {
                    Some((td, local)) if addresses.is_user(&td, &local) => None,
                    Some((td, local)) if addresses.is_alias(&td, &local) => {
                        index.get(&(td, local)).copied()
                    }
                    Some((td, _)) if addresses.has_catch_all(&td) => {
                        index.get(&(td, "*".to_string())).copied()
                    }
                    _ => None,
                };
                match next {
                    Some(j) if seen.insert(j) => edges[i].push(j),
                    Some(_) => {}
                    None if !matches!(target, AliasTarget::Pipe(_)) => {
                        terminal[i] = 1;
                        terminal_name[i].get_or_insert_with(|| match target {
                            AliasTarget::Local(l) => format!("{l}@{domain}"),
                            other => other.to_string(),
                        });
                    }
                    None => {}
                }
            }
        }
        Graph {
            nodes,
            edges,
            terminal,
            terminal_name,
        }
    }

    fn show(&self, node: usize) -> String {
        let (domain, alias) = &self.nodes[node];
        format!("{alias}@{domain}")
    }
}

/// Strongly connected components (Tarjan, iterative so a long chain cannot overflow the
/// stack), each in ascending node order, listed in the order they finish: every component
/// comes after all the components it reaches.
fn components(graph: &Graph) -> Vec<Vec<usize>> {
    let n = graph.nodes.len();
    let mut t = Tarjan {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        calls: Vec::new(),
        counter: 0,
    };
    let mut out = Vec::new();
    for root in 0..n {
        if t.index[root].is_some() {
            continue;
        }
        t.enter(root);
        while let Some(&mut (v, ref mut next)) = t.calls.last_mut() {
            if let Some(&w) = graph.edges[v].get(*next) {
                *next += 1;
                match t.index[w] {
                    None => t.enter(w),
                    Some(iw) if t.on_stack[w] => t.low[v] = t.low[v].min(iw),
                    Some(_) => {}
                }
                continue;
            }
            t.calls.pop();
            if let Some(&(parent, _)) = t.calls.last() {
                t.low[parent] = t.low[parent].min(t.low[v]);
            }
            if Some(t.low[v]) == t.index[v] {
                let mut component = Vec::new();
                while let Some(w) = t.stack.pop() {
                    t.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out
}

/// The state of Tarjan's algorithm; `calls` replaces the recursion: (node, next edge).
struct Tarjan {
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    calls: Vec<(usize, usize)>,
    counter: usize,
}

impl Tarjan {
    fn enter(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        self.calls.push((v, 0));
    }
}

/// The shortest loop from `start` back to itself inside `members` (breadth-first).
fn shortest_loop(graph: &Graph, start: usize, members: &HashSet<usize>) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &graph.edges[v] {
            if w == start {
                let mut path = vec![v];
                let mut at = v;
                while at != start {
                    at = parent[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if members.contains(&w) && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

pub fn check(site: &Site, addresses: &SiteAddresses, out: &mut Vec<Finding>) {
    let graph = Graph::of(site, addresses);
    let n = graph.nodes.len();
    // Deepest lookup level below each node; None when the node is in or reaches a loop.
    let mut height: Vec<Option<usize>> = vec![None; n];
    // The successor on a deepest chain, to show it.
    let mut deepest_next: Vec<Option<usize>> = vec![None; n];
    let mut too_deep = Vec::new();
    for component in components(&graph) {
        let first = component[0];
        let looped = component.len() > 1 || graph.edges[first].contains(&first);
        if looped {
            report_loop(&graph, &component, out);
            continue;
        }
        let mut best = Some(graph.terminal[first]);
        for &w in &graph.edges[first] {
            match (best, height[w]) {
                (Some(b), Some(h)) if h + 1 > b => {
                    best = Some(h + 1);
                    deepest_next[first] = Some(w);
                }
                (_, None) => best = None,
                _ => {}
            }
            if best.is_none() {
                break;
            }
        }
        height[first] = best;
        if best.is_some_and(|h| h >= ALIAS_RECURSION_LIMIT) {
            too_deep.push(first);
        }
    }
    too_deep.sort_unstable();
    for &node in &too_deep {
        let mut chain = vec![graph.show(node)];
        let mut at = node;
        while let Some(next) = deepest_next[at] {
            chain.push(graph.show(next));
            at = next;
        }
        if let Some(end) = &graph.terminal_name[at] {
            chain.push(end.clone());
        }
        let levels = height[node].unwrap_or(0) + 1;
        let (domain, alias) = &graph.nodes[node];
        out.push(finding(
            &["domains", domain.as_str(), "aliases", alias],
            format!(
                "alias `{alias}@{domain}` expands through {levels} levels ({}); chasquid gives up after {ALIAS_RECURSION_LIMIT}",
                elide(&chain).join(" -> ")
            ),
            Some("point the alias closer to its final destination".into()),
        ));
    }
}

fn report_loop(graph: &Graph, component: &[usize], out: &mut Vec<Finding>) {
    let start = component[0];
    let members: HashSet<usize> = component.iter().copied().collect();
    let cycle = shortest_loop(graph, start, &members);
    let mut shown: Vec<String> = cycle.iter().map(|&v| graph.show(v)).collect();
    shown.push(graph.show(start));
    let mut message = format!("aliases form a loop: {}", shown.join(" -> "));
    let others: Vec<String> = component
        .iter()
        .filter(|v| !cycle.contains(v))
        .map(|&v| graph.show(v))
        .collect();
    if !others.is_empty() {
        message.push_str(&format!(
            "; {} more aliases are in loops with these: {}",
            others.len(),
            elide(&others).join(", ")
        ));
    }
    let (domain, alias) = &graph.nodes[start];
    out.push(finding(
        &["domains", domain.as_str(), "aliases", alias],
        message,
        Some("make one alias in the loop deliver to a user or a remote address".into()),
    ));
}

/// At most [`SHOWN_CHAIN`] names: the first and last ones with `…` between.
fn elide(names: &[String]) -> Vec<String> {
    if names.len() <= SHOWN_CHAIN {
        return names.to_vec();
    }
    let head = SHOWN_CHAIN / 2;
    let tail = SHOWN_CHAIN - head - 1;
    let mut out = names[..head].to_vec();
    out.push(format!("… ({} more)", names.len() - head - tail));
    out.extend_from_slice(&names[names.len() - tail..]);
    out
}
