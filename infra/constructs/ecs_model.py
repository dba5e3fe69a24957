"""GPU models on ECS (EC2 GPU instances) behind an internal Network Load Balancer.

`GpuNetwork` is shared by every ECS model of an environment; `EcsGpuService` is one model:
GPU Auto Scaling group + capacity provider, task definition, service with rollback, NLB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from inferstack.names import ENV_CAPTURE_RATE, METRIC_GPU_UTILIZATION, METRICS_NAMESPACE
from infra.constructs.capture import CaptureDelivery
from infra.constructs.common import log_retention, removal_policy
from infra.constructs.gpu_serving import (
    SERVER_LIVE_PATH,
    SERVER_UP_PATH,
    capture_prefix,
    gpu_container_environment,
    grant_engine_cache,
    suppress_model_role_wildcards,
)
from infra.constructs.images import gpu_image
from infra.constructs.monitoring import inferstack_metric

if TYPE_CHECKING:
    from collections.abc import Sequence

    from infra.config import EcsModel, Environment
    from infra.constructs.model_store import ModelStore

CONTAINER_NAME = "inference"
CONTAINER_PORT = 8080
LISTENER_PORT = 80
# The load balancer's probe, the server-is-up path (200 once the model serves or before its
# first release; 503 while it loads or builds its engine, or after its release failed): a
# task takes traffic only when it can answer. A readiness path would fail a first deploy.
HEALTH_PATH = SERVER_UP_PATH
# The container health check's probe: liveness, 200 also while the engine builds. ECS
# restarts a container whose check fails after the start period (at most 300 s), which a
# cold TensorRT build outlasts; the service's grace period bounds the build instead.
CONTAINER_HEALTH_PATH = SERVER_LIVE_PATH
ROOT_VOLUME_GIB = 100  # GPU AMI + CUDA-sized image layers
# Model download + session start (an engine build) can take minutes on a fresh instance.
# The scheduler ignores failing load balancer AND container health checks for the model's
# engine_build_timeout_s after a task starts (CreateService healthCheckGracePeriodSeconds,
# https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CreateService.html).
# The container health check's own start period: 300 s is the most ECS allows
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_HealthCheck.html).
CONTAINER_START_PERIOD = cdk.Duration.seconds(300)
# GPUUtilization is published per minute (server/gpu_metrics.py): scale on 1-minute averages.
GPU_METRIC_PERIOD = cdk.Duration.minutes(1)
# A literal CIDR (not the VPC's CidrBlock attribute) so security-group rules can be checked
# at synth time (cdk-nag EC23 cannot evaluate a token).
VPC_CIDR = "10.40.0.0/16"
# The Docker daemon's log buffer in non-blocking mode: ~10 s of a busy container's stdout
# (capture records and EMF lines), the most an instance's abrupt end can lose.
LOG_BUFFER = cdk.Size.mebibytes(25)


class GpuNetwork(Construct):
    """VPC (private subnets, NAT egress, flow logs, private AWS endpoints) and ECS cluster."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Environment) -> None:
        super().__init__(scope, construct_id)
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal_policy(config),
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            flow_logs={
                "all": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        # Image layers (S3), image manifests (ECR) and logs stay off the NAT gateways.
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        endpoint_sg = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="HTTPS from the VPC to AWS interface endpoints",
            allow_all_outbound=False,
        )
        endpoint_sg.add_ingress_rule(ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(443), "VPC clients")
        for endpoint_id, service in (
            ("Ecr", ec2.InterfaceVpcEndpointAwsService.ECR),
            ("EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
            ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS),
        ):
            self.vpc.add_interface_endpoint(
                endpoint_id,
                service=service,
                subnets=private,
                security_groups=[endpoint_sg],
                open=False,
            )

        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )


class EcsGpuService(Construct):
    """One model on an ECS service of GPU tasks, reached through an internal NLB."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Environment,
        model: EcsModel,
        store: ModelStore,
        network: GpuNetwork,
    ) -> None:
        super().__init__(scope, construct_id)
        vpc = network.vpc
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.listener_port = LISTENER_PORT

        capacity_provider = self._capacity(vpc, private, model, network.cluster)
        task_definition = self._task_definition(config, model, store)

        service_sg = ec2.SecurityGroup(
            self, "ServiceSecurityGroup", vpc=vpc, description=f"{model.name} tasks"
        )
        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=network.cluster,
            task_definition=task_definition,
            # No DesiredCount: with it, every stack update resets an autoscaled service to
            # that number. Without it, CloudFormation creates the service with 1 task and
            # leaves the count alone on updates ("For existing services, if a desired count
            # is not specified, it is omitted from the operation",
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-ecs-service.html#cfn-ecs-service-desiredcount).
            # Registering the scalable target then raises it to min_capacity
            # (RegisterScalableTarget "changes the resource's current capacity to a value
            # that is inside of this range",
            # https://docs.aws.amazon.com/autoscaling/application/APIReference/API_RegisterScalableTarget.html).
            desired_count=None,
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(
                    capacity_provider=capacity_provider.capacity_provider_name, weight=1
                )
            ],
            # Never below the current fleet during a deploy; new tasks start next to old.
            min_healthy_percent=100,
            max_healthy_percent=200,
            # The circuit breaker fails (and rolls back) a deployment whose tasks do not reach
            # RUNNING or fail their load balancer / container health checks once the grace
            # period is over: exactly "the new version does not come up"
            # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html).
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            health_check_grace_period=cdk.Duration.seconds(model.engine_build_timeout_s),
            security_groups=[service_sg],
            vpc_subnets=private,
            placement_strategies=[ecs.PlacementStrategy.spread_across_instances()],
        )

        # Internal NLB: API Gateway reaches it through a VPC link. Its own security group
        # admits the VPC; PrivateLink (VPC link) traffic is not filtered by it.
        nlb_sg = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description=f"{model.name} internal NLB",
            allow_all_outbound=False,
        )
        nlb_sg.add_ingress_rule(ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(LISTENER_PORT), "VPC clients")
        self.load_balancer = elbv2.NetworkLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=False,
            vpc_subnets=private,
            cross_zone_enabled=True,
            security_groups=[nlb_sg],
            enforce_security_group_inbound_rules_on_private_link_traffic=False,
        )
        listener = self.load_balancer.add_listener(
            "Tcp", port=LISTENER_PORT, protocol=elbv2.Protocol.TCP
        )
        self.target_group = listener.add_targets(
            "Tasks",
            port=CONTAINER_PORT,
            protocol=elbv2.Protocol.TCP,
            targets=[
                self.service.load_balancer_target(
                    container_name=CONTAINER_NAME, container_port=CONTAINER_PORT
                )
            ],
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP,
                path=HEALTH_PATH,
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
                interval=cdk.Duration.seconds(10),
            ),
            # Below the 30 s between SIGTERM and SIGKILL: in-flight requests finish first.
            deregistration_delay=cdk.Duration.seconds(25),
        )
        # Only the NLB (traffic and health checks) reaches the tasks.
        service_sg.add_ingress_rule(nlb_sg, ec2.Port.tcp(CONTAINER_PORT), "NLB to tasks")
        nlb_sg.add_egress_rule(service_sg, ec2.Port.tcp(CONTAINER_PORT), "NLB to tasks")

        # Deletes run in reverse dependency order. The service refers to the capacity
        # provider but not to the cluster's capacity provider association, so CloudFormation
        # could remove the association while the service still uses the provider ("The
        # specified capacity provider is in use and cannot be removed";
        # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteCapacityProvider.html,
        # https://github.com/aws/aws-cdk/issues/18179). A dependency on the cluster construct
        # covers the association, which aws-cdk-lib adds under it at synthesis.
        self.service.node.add_dependency(network.cluster)

        # No UnHealthyHostCount deployment alarm: a new task is an unhealthy target until
        # its model is loaded (minutes), so that alarm rolled back healthy deployments. The
        # circuit breaker above covers tasks that never come up; what the deployment alarm
        # should watch is what clients see fail, the model's 5xx rate (roll_back_on).
        if model.autoscaling.enabled:
            self._autoscale(model, config.name)
        self._suppress(model, task_definition)

    def roll_back_on(self, alarms: Sequence[cloudwatch.IAlarm]) -> None:
        """Fail and roll back an ECS deployment while any of `alarms` is in ALARM.

        ECS watches them during the deployment and a bake time after it
        (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-alarm-failure.html).
        """
        self.service.enable_deployment_alarms(
            [alarm.alarm_name for alarm in alarms], behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM
        )

    def _capacity(
        self,
        vpc: ec2.IVpc,
        private: ec2.SubnetSelection,
        model: EcsModel,
        cluster: ecs.Cluster,
    ) -> ecs.AsgCapacityProvider:
        """GPU instances, scaled by ECS (managed scaling) for the tasks placed on them."""
        instance_sg = ec2.SecurityGroup(
            self, "InstanceSecurityGroup", vpc=vpc, description="GPU container instances"
        )
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(model.instance_type),
            # Resolved from the public SSM parameter at deploy time: synth needs no AWS
            # lookup, and every deploy picks up the latest patched GPU AMI. The trade-off:
            # a new AMI release replaces the instances on the next deploy (managed
            # draining moves their tasks first). cached_in_context would pin it
            # in cdk.context.json but needs AWS credentials at synth.
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            user_data=ec2.UserData.for_linux(),  # the capacity provider adds the cluster join
            role=iam.Role(
                self, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com")
            ),
            security_group=instance_sg,
            require_imdsv2=True,
            http_put_response_hop_limit=1,  # containers (awsvpc) cannot reach host IMDS
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        ROOT_VOLUME_GIB,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
        )
        group = autoscaling.AutoScalingGroup(
            self,
            "Instances",
            vpc=vpc,
            vpc_subnets=private,
            launch_template=launch_template,
            min_capacity=model.autoscaling.min_capacity,
            # One GPU task per instance at most; twice the task maximum leaves room for a
            # full 200 % rolling deploy at peak size.
            max_capacity=model.autoscaling.max_capacity * 2,
            # A new GPU AMI (the SSM parameter resolves at each deploy) makes a new launch
            # template version; without an update policy only instances launched later get
            # it. This replaces running instances one at a time, keeping min_capacity in
            # service, and managed draining moves each old instance's tasks first
            # (UpdatePolicy AutoScalingRollingUpdate,
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-updatepolicy.html).
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1,
                min_instances_in_service=model.autoscaling.min_capacity,
            ),
        )
        provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=group,
            enable_managed_scaling=True,
            # No managed termination protection: it needs every instance protected from
            # scale-in (NewInstancesProtectedFromScaleIn), and protected instances block the
            # group's deletion: CloudFormation sets the group to 0 and waits for instances
            # that scale-in may not terminate, so `cdk destroy` and the rollback of a failed
            # first deploy hang until they time out
            # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/managed-termination-protection.html,
            # https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-instance-protection.html,
            # https://github.com/aws/aws-cdk/issues/14732). Managed draining covers scale-in
            # instead: ECS moves an instance's tasks elsewhere (respecting the service's 100 %
            # minimum healthy) before the group terminates it
            # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/managed-instance-draining.html).
            enable_managed_termination_protection=False,
            enable_managed_draining=True,
        )
        cluster.add_asg_capacity_provider(provider)
        self._instances = group
        return provider

    def _task_definition(
        self, config: Environment, model: EcsModel, store: ModelStore
    ) -> ecs.Ec2TaskDefinition:
        task_definition = ecs.Ec2TaskDefinition(
            self, "TaskDefinition", network_mode=ecs.NetworkMode.AWS_VPC
        )
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention(config.log_retention_days),
            removal_policy=removal_policy(config),
        )
        task_definition.add_container(
            CONTAINER_NAME,
            image=ecs.ContainerImage.from_docker_image_asset(gpu_image(self)),
            gpu_count=model.gpu_count,
            memory_limit_mib=model.memory_mib,
            cpu=model.cpu_units,
            environment={
                **gpu_container_environment(config, model, store),
                # inferstack.capture samples this share of requests for the drift check;
                # SageMaker models capture with DataCapture instead and never get it.
                ENV_CAPTURE_RATE: f"{model.capture_rate:g}",
            },
            port_mappings=[ecs.PortMapping(container_port=CONTAINER_PORT)],
            # Non-blocking: a slow CloudWatch Logs never stalls requests on a stdout write;
            # the daemon's buffer is bounded (what is over it is dropped, and what is in it
            # is lost if the instance dies)
            # (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_LogConfiguration.html).
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=model.name,
                log_group=log_group,
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=LOG_BUFFER,
            ),
            # The slim image has no curl: urlopen raises (exit 1) on anything but 2xx.
            health_check=ecs.HealthCheck(
                command=[
                    "CMD",
                    "python",
                    "-c",
                    "import urllib.request; urllib.request.urlopen("
                    f"'http://127.0.0.1:{CONTAINER_PORT}{CONTAINER_HEALTH_PATH}', timeout=3)",
                ],
                interval=cdk.Duration.seconds(30),
                timeout=cdk.Duration.seconds(5),
                retries=3,
                start_period=CONTAINER_START_PERIOD,
            ),
            stop_timeout=cdk.Duration.seconds(30),
        )
        # Captured requests leave through the container's log group (constructs/capture.py).
        if model.capture_rate > 0:
            CaptureDelivery(self, "Capture", model=model, store=store, log_group=log_group)
        role = task_definition.task_role
        store.grant_model_read(role, model)
        store.grant_prefix_write(role, capture_prefix(model))
        grant_engine_cache(store, role, model)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # no resource type; scoped by namespace
                conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
            )
        )
        return task_definition

    def _autoscale(self, model: EcsModel, environment: str) -> None:
        """Track the tasks' average GPU utilization, which the container publishes (NVML,
        EMF) per model without a version dimension, so one policy follows every release.

        NLBs have no per-target request metric (RequestCountPerTarget is ALB-only), the
        runtime's Requests metric carries a model_version dimension that changes with every
        release (a target-tracking policy cannot SEARCH), and CPU says little about a GPU
        server. The metric must have exactly its published dimensions (METRIC_DIMENSIONS)
        and fall as tasks are added: every task's samples land in one series, whose Average
        halves when the tasks double under the same load ("choose a metric that changes
        inversely proportional to a change in the scalable target's capacity",
        https://docs.aws.amazon.com/autoscaling/application/userguide/application-auto-scaling-target-tracking.html).
        A task without a GPU publishes none: its alarms see no data and do not act.
        """
        scaling = self.service.auto_scale_task_count(
            min_capacity=model.autoscaling.min_capacity,
            max_capacity=model.autoscaling.max_capacity,
        )
        scaling.scale_to_track_custom_metric(
            "GpuUtilization",
            metric=inferstack_metric(
                METRIC_GPU_UTILIZATION,
                environment=environment,
                model=model.name,
                statistic="Average",
                period=GPU_METRIC_PERIOD,
            ),
            target_value=model.autoscaling.target_gpu_utilization,
            scale_in_cooldown=cdk.Duration.minutes(5),
            scale_out_cooldown=cdk.Duration.minutes(1),
        )

    def _suppress(self, model: EcsModel, task_definition: ecs.Ec2TaskDefinition) -> None:
        suppress_model_role_wildcards(task_definition.task_role, model)
        no_resource_type = NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason=(
                "Actions without a resource type: cloudwatch:PutMetricData (task role, "
                "namespace-conditioned) and ecr:GetAuthorizationToken (execution role, "
                "image pull)."
            ),
            applies_to=["Resource::*"],
        )
        NagSuppressions.add_resource_suppressions(
            task_definition,
            [
                no_resource_type,
                NagPackSuppression(
                    id="AwsSolutions-ECS2",
                    reason=(
                        "The environment holds no secrets: model name, model S3 URI, "
                        "environment name, batching, queue and precision settings."
                    ),
                ),
            ],
            apply_to_children=True,
        )
        NagSuppressions.add_resource_suppressions(
            self._instances.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "The ECS agent's container-instance policy generated by aws-cdk-lib: "
                        "ecs:Submit* is scoped to the cluster; ecs:DiscoverPollEndpoint, "
                        "ecs:Poll-side calls and ecr:GetAuthorizationToken have no resource type."
                    ),
                    applies_to=["Action::ecs:Submit*", "Resource::*"],
                )
            ],
            apply_to_children=True,
        )
        NagSuppressions.add_resource_suppressions(
            self._instances,
            [
                NagPackSuppression(
                    id="AwsSolutions-AS3",
                    reason=(
                        "The capacity provider (managed scaling) drives this group; its "
                        "scaling shows in ECS service events and Container Insights."
                    ),
                )
            ],
            apply_to_children=True,
        )
        NagSuppressions.add_resource_suppressions(
            self.load_balancer,
            [
                NagPackSuppression(
                    id="AwsSolutions-ELB2",
                    reason=(
                        "NLB access logs are only written for TLS listeners; this internal "
                        "TCP listener would produce none. VPC flow logs cover the traffic."
                    ),
                )
            ],
        )
