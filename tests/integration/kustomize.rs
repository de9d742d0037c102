//! Kustomization files as teams write them (issue 15): the pushed reference as an entry's
//! `newName`, a key written twice outside `images:`, digit-led registry hosts, no final
//! line break. Each through the real git server, checked byte for byte where the issue
//! asks it, and rendered with `kubectl kustomize`.

use crate::dsl::*;

const OVERLAY: &str = "k8s/apps/tomoda/overlays/dev";
const BASE: &str = "k8s/apps/tomoda/base";
const ACR: &str = "acr.example.io/team/api";
const ECR: &str = "478468757808.dkr.ecr.ap-south-1.amazonaws.com/team/new";

/// A base Deployment with one container per image, and the dev overlay `dev` over it.
fn devops_with(images: &[&str], dev: &str) -> Devops {
    let containers: String = images
        .iter()
        .enumerate()
        .map(|(i, image)| format!("        - name: c{i}\n          image: {image}\n"))
        .collect();
    Devops::with_files(&[
        (
            format!("{BASE}/kustomization.yaml").as_str(),
            "resources:\n  - deployment.yaml\n".to_string(),
        ),
        (
            format!("{BASE}/deployment.yaml").as_str(),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  selector:\n    matchLabels: {{app: api}}\n  template:\n    metadata:\n      labels: {{app: api}}\n    spec:\n      containers:\n{containers}"
            ),
        ),
        (DEV, dev.to_string()),
    ])
}

fn promote(devops: &Devops, image: &str) -> Done {
    Run::new()
        .args([
            "--repo",
            &devops.url(),
            "--overlay",
            OVERLAY,
            "--image",
            image,
        ])
        .run()
}

/// `kubectl kustomize` of the dev overlay on the branch as it is now.
fn rendered(devops: &Devops) -> String {
    let checkout = devops.checkout();
    kustomize_render(checkout.path(), OVERLAY)
}

#[test]
fn the_pushed_reference_sets_the_entry_whose_new_name_it_is() {
    let dev = format!(
        "resources:\n  - ../../base\nimages:\n  - name: api   # the base's short name\n    newName: {ACR}\n    newTag: sha-2d26382\n"
    );
    let devops = devops_with(&["api:latest"], &dev);
    promote(&devops, &format!("{ACR}:sha-abc1234"))
        .ok()
        .stderr_has(&format!(
            "{DEV}:4: no `images:` entry is named {ACR}; set the entry named api instead, whose `newName` it is"
        ));
    assert_eq!(
        devops.file(DEV),
        dev.replace("sha-2d26382", "sha-abc1234"),
        "no second entry"
    );
    assert_eq!(devops.commit_count(), 2);
    let render = rendered(&devops);
    assert!(
        render.contains(&format!("image: {ACR}:sha-abc1234")),
        "{render}"
    );
}

#[test]
fn several_entries_with_the_pushed_reference_as_new_name_are_refused() {
    let dev = format!(
        "resources:\n  - ../../base\nimages:\n  - name: api\n    newName: {ACR}\n    newTag: a\n  - name: api-canary\n    newName: {ACR}\n    newTag: b\n"
    );
    let devops = devops_with(&["api:latest", "api-canary:latest"], &dev);
    let head = devops.head();
    promote(&devops, &format!("{ACR}:sha-abc1234"))
        .code(2)
        .stderr_has(&format!(
            "{DEV}:7: no `images:` entry is named {ACR}, and 2 entries have it as their `newName`: api (line 4), api-canary (line 7); which one to set is unclear"
        ))
        .stderr_has("name the image by one entry's `name:`");
    assert_eq!(devops.head(), head, "nothing pushed");
}

#[test]
fn a_key_twice_outside_images_is_edited_with_a_warning_and_renders_with_the_last() {
    let dev = format!(
        "namespace: first\nresources:\n  - ../../base\nnamespace: second\nimages:\n  - name: {ACR}\n    newTag: v1\n"
    );
    let devops = devops_with(&[&format!("{ACR}:v0")], &dev);
    promote(&devops, &format!("{ACR}:v2"))
        .ok()
        .stderr_has(&format!(
            "{DEV}:4: the key `namespace` appears twice in one mapping (first at line 1); kubectl kustomize uses the last one and stricter YAML tools refuse the file; it was left as it is"
        ));
    assert_eq!(devops.file(DEV), dev.replace("newTag: v1", "newTag: v2"));
    let render = rendered(&devops);
    assert!(render.contains("namespace: second"), "{render}");
    assert!(render.contains(&format!("image: {ACR}:v2")), "{render}");
}

#[test]
fn images_twice_is_refused_as_ambiguous() {
    let dev = format!(
        "resources:\n  - ../../base\nimages:\n  - name: {ACR}\n    newTag: v1\nimages:\n  - name: other\n    newTag: x\n"
    );
    let devops = devops_with(&[&format!("{ACR}:v0")], &dev);
    let head = devops.head();
    promote(&devops, &format!("{ACR}:v2"))
        .code(2)
        .stderr_has(&format!(
            "{DEV}:6: the key `images` appears twice (first at line 3); kustomize would use only this last list"
        ))
        .stderr_has("merge the two `images:` lists into one");
    assert_eq!(devops.head(), head, "nothing pushed");
}

#[test]
fn a_digit_led_ecr_name_and_tag_are_appended_plain_beside_plain_siblings() {
    let dev = format!("resources:\n  - ../../base\nimages:\n  - name: {ACR}\n    newTag: v1\n");
    let devops = devops_with(&[&format!("{ACR}:v0"), &format!("{ECR}:old")], &dev);
    promote(&devops, &format!("{ECR}:4.99.11.0-wecare")).ok();
    assert_eq!(
        devops.file(DEV),
        format!("{dev}  - name: {ECR}\n    newTag: 4.99.11.0-wecare\n")
    );
    assert!(rendered(&devops).contains(&format!("image: {ECR}:4.99.11.0-wecare")));

    // A tag YAML would read as a number still gets quotes, and renders as the string.
    promote(&devops, &format!("{ECR}:1.10")).ok();
    assert_eq!(
        devops.file(DEV),
        format!("{dev}  - name: {ECR}\n    newTag: \"1.10\"\n")
    );
    assert!(rendered(&devops).contains(&format!("image: {ECR}:1.10")));
}

#[test]
fn a_file_without_a_final_line_break_gains_exactly_the_new_line() {
    let dev = format!("resources:\n  - ../../base\nimages:\n  - name: api\n    newName: {ACR}");
    let devops = devops_with(&["api:latest"], &dev);
    promote(&devops, "api:sha-abc1234").ok();
    assert_eq!(devops.file(DEV), format!("{dev}\n    newTag: sha-abc1234"));
    let render = rendered(&devops);
    assert!(
        render.contains(&format!("image: {ACR}:sha-abc1234")),
        "{render}"
    );
}
